import { NextResponse } from 'next/server'
import { requireSession } from '../../../lib/session'

// Without a session the gateway has already answered 401 JSON (on_unauthenticated: status).
export async function GET() {
  return NextResponse.json(await requireSession())
}
