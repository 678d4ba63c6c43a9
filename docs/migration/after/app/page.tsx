import Link from 'next/link'
import { getSession } from '../lib/session'

// `auth: optional` in config.yaml: the identity headers are there when a session is.
export default async function Home() {
  const session = await getSession()
  return (
    <main>
      <h1>Notes</h1>
      {session ? (
        <p>
          Welcome back, {session.name}. <Link href="/dashboard">Your notes</Link>
        </p>
      ) : (
        <p>
          <a href="/login?next=/dashboard">Sign in</a> to see your notes.
        </p>
      )}
    </main>
  )
}
