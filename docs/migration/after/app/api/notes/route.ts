import { NextResponse, type NextRequest } from 'next/server'
import { verifyAssertion } from '../../../lib/assertion'

// An API route that checks the gateway's signature instead of trusting X-User-* headers.
export async function POST(request: NextRequest) {
  const user = await verifyAssertion(request, request.nextUrl.pathname)
  if (!user) return NextResponse.json({ error: 'unauthorized' }, { status: 401 })
  const { note } = (await request.json()) as { note?: unknown }
  return NextResponse.json({ saved: typeof note === 'string' ? note.length : 0, by: user.sub })
}
