import { notFound, redirect } from 'next/navigation'
import { getSession } from '../../lib/session'

export default async function Admin() {
  const session = await getSession()
  if (!session) redirect('/login?next=/admin')
  if (!session.roles.includes('admin')) notFound() // middleware.ts answers 403 first
  return (
    <main>
      <h1>Admin</h1>
      <p>Only admins see this page, {session.name}.</p>
    </main>
  )
}
