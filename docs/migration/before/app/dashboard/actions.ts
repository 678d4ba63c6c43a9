'use server'

import { getSession } from '../../lib/session'

export async function saveNote(formData: FormData): Promise<void> {
  const session = await getSession()
  if (!session) throw new Error('not signed in')
  const note = String(formData.get('note') ?? '')
  console.log(`note from ${session.sub}: ${note.length} characters`)
}
