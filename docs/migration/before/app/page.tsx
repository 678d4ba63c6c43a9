import Link from 'next/link'
import { getSession } from '../lib/session'

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
          <Link href="/login">Sign in</Link> to see your notes.
        </p>
      )}
    </main>
  )
}
