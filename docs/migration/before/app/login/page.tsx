export default async function LoginPage({
  searchParams,
}: {
  searchParams: Promise<{ next?: string; error?: string }>
}) {
  const { next = '/dashboard', error } = await searchParams
  return (
    <main>
      <h1>Sign in</h1>
      {error && <p role="alert">Invalid username or password.</p>}
      <form method="post" action="/api/login">
        <input type="hidden" name="next" value={next} />
        <label>
          Username <input name="username" autoComplete="username" required />
        </label>
        <label>
          Password <input name="password" type="password" autoComplete="current-password" required />
        </label>
        <button type="submit">Sign in</button>
      </form>
    </main>
  )
}
