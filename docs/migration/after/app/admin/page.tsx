import { requireSession } from '../../lib/session'

// `roles: [admin]` in config.yaml: everyone else got 403 from the gateway.
export default async function Admin() {
  const session = await requireSession()
  return (
    <main>
      <h1>Admin</h1>
      <p>Only admins see this page, {session.name}.</p>
    </main>
  )
}
