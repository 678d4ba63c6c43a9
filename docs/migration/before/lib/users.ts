// Who may sign in. A real app reads this from its database; the hashes are bcrypt.
import 'server-only'
import { compare } from 'bcryptjs'
import type { Claims } from './tokens'

type User = Claims & { passwordHash: string; disabled?: boolean }

const USERS: User[] = [
  {
    sub: 'alice',
    email: 'alice@example.com',
    name: 'Alice',
    roles: ['admin'],
    passwordHash: '$2b$10$7z1rDDkBvB1BeUKRXOko.ukL14Yfv4H0bHeCsnxxc6eVbbKkIi2Aa', // wonderland
  },
  {
    sub: 'bob',
    email: 'bob@example.com',
    name: 'Bob',
    roles: ['viewer'],
    passwordHash: '$2b$10$qLTAj5ZB2e9Xu7cNR1xgau3Oyl/mU7UfpzPAyh9px/iHiYaLuUoZG', // builder
  },
]

// compared against for unknown users, so they take as long as a wrong password
const DUMMY = '$2b$10$qLTAj5ZB2e9Xu7cNR1xgau3Oyl/mU7UfpzPAyh9px/iHiYaLuUoZG'

export async function checkPassword(username: string, password: string): Promise<Claims | null> {
  const user = USERS.find((u) => u.sub === username && !u.disabled)
  const ok = await compare(password, user?.passwordHash ?? DUMMY)
  if (!ok || !user) return null
  return { sub: user.sub, email: user.email, name: user.name, roles: user.roles }
}
