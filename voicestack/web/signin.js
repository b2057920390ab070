// Sign-in: who is using the page, and the sign-in screen when nobody is.
//
// With `?token=` in the page's URL the token decides, as it always has. Without one the page
// asks the server who the sign-in cookie belongs to (`GET /api/me`); when nobody is signed in
// it shows the sign-in screen (the server's providers and, when it sends them, email links)
// instead of the app, and the app never starts.

import { byId, h } from "./dom.js";
import { request } from "./voicestack.js";

/**
 * Resolves to the signed-in user `{id, name, email, role}` (null when the server cannot say,
 * e.g. it is unreachable: the app then reports that itself). Without a token and without a
 * session, shows the sign-in screen and never resolves.
 */
export async function signedIn(token) {
  let me;
  try {
    me = await request("/api/me", { token });
  } catch (err) {
    if (token || err.status !== 401) return null;
    await showSignIn();
    return new Promise(() => {});
  }
  showWho(me, !token);
  return me;
}

function showWho(me, canSignOut) {
  const who = byId("who");
  who.textContent = me.email || me.name;
  who.title = `Signed in as ${me.name}${me.role === "admin" ? " (admin)" : ""}`;
  who.hidden = false;
  const button = byId("sign-out");
  button.title = `Sign out ${me.email || me.name}`;
  button.hidden = !canSignOut;
  button.addEventListener("click", signOut);
}

async function signOut() {
  const button = byId("sign-out");
  button.disabled = true;
  try {
    await request("/auth/logout", { method: "POST" });
  } finally {
    location.assign("/");
  }
}

async function showSignIn() {
  document.querySelector(".app").hidden = true;
  byId("signin").hidden = false;
  const note = byId("signin-note");
  let options = { providers: [], email: false };
  try {
    options = await request("/auth/providers");
  } catch (err) {
    note.textContent = err.message;
    return;
  }
  const button = (p) =>
    h("a", { class: "btn primary signin-provider", href: p.url }, `Sign in with ${p.title}`);
  byId("signin-providers").replaceChildren(...options.providers.map((p) => h("li", {}, button(p))));
  const form = byId("signin-email");
  form.hidden = !options.email;
  if (options.email) form.addEventListener("submit", sendLink);
  if (!options.providers.length && !options.email) {
    note.textContent =
      "This server has no sign-in configured: open the page with the link" +
      " `voicestack serve` printed.";
  }
  byId("signin-title").focus();
}

async function sendLink(event) {
  event.preventDefault(); // sent by script: the page's policy lets no form post itself
  const note = byId("signin-note");
  const address = byId("signin-address");
  const button = event.submitter;
  if (button) button.disabled = true;
  try {
    await request("/auth/email", { method: "POST", body: { email: address.value.trim() } });
    note.textContent =
      `A sign-in link is on its way to ${address.value.trim()}.` +
      " It works once, for 15 minutes.";
  } catch (err) {
    note.textContent = err.message;
  } finally {
    if (button) button.disabled = false;
  }
}
