'use server'

import { requireSession } from '../../lib/session'

// A Server Action is a POST to the page's own path: the gateway checks its session and its
// Origin like any other request, then Next.js checks the Origin against X-Forwarded-Host.
export async function saveNote(formData: FormData): Promise<void> {
  const session = await requireSession()
  const note = String(formData.get('note') ?? '')
  console.log(`note from ${session.sub}: ${note.length} characters`)
}
