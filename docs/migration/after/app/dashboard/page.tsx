import { requireSession } from '../../lib/session'
import { saveNote } from './actions'

export default async function Dashboard() {
  const session = await requireSession() // the gateway redirected strangers to /login already
  return (
    <main>
      <h1>Hello, {session.name}</h1>
      <p>
        Signed in as {session.email} ({session.roles.join(', ') || 'no roles'})
      </p>
      <form action={saveNote}>
        <input name="note" aria-label="Note" />
        <button type="submit">Save</button>
      </form>
      <form method="post" action="/logout">
        <button type="submit">Sign out</button>
      </form>
    </main>
  )
}
