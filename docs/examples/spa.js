// fetch() for a single-page app behind the gateway: docs/api-clients.md.
//
// The session lives in two HttpOnly cookies that this script never sees: the browser sends
// them, and takes the refreshed ones the gateway sets on any answer. What a page has to do
// is to send them (same-origin credentials) and, on 401, send the user to the sign-in page,
// which brings them back here afterwards.
async function gatewayFetch(input, init = {}) {
  const response = await fetch(input, {
    ...init,
    credentials: 'same-origin',
    // JSON, so the gateway answers 401 rather than a redirect to its HTML login page
    headers: { Accept: 'application/json', ...(init.headers || {}) },
  });
  if (response.status === 401) {
    // No session any more: expired, signed out, or revoked. The 401 body names the page.
    let login = '/login';
    try {
      login = (await response.json()).login || login;
    } catch (notJson) {
      // an app's own 401 without the gateway's body: the default path
    }
    const here = window.location.pathname + window.location.search + window.location.hash;
    window.location.assign(login + '?next=' + encodeURIComponent(here));
    return new Promise(() => {}); // never settles: the page is going away
  }
  return response; // 403 (a role missing) and the rest are the app's to show
}
