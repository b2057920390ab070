// The voicestack page: thread list, the open thread (live), tool calls, send box, microphone and
// Talk mode (a spoken conversation).
// The token comes from the page's own URL (`/?token=...`), or else the sign-in cookie (signin.js);
// the open thread is the URL's hash.

import { Composer } from "./composer.js";
import { Conversation, isActive } from "./conversation.js";
import { byId, shortTime } from "./dom.js";
import { toast } from "./notice.js";
import { Talk } from "./talk.js";
import { ThreadList, UNTITLED } from "./threadlist.js";
import { ToolPanel } from "./toolpanel.js";
import { signedIn } from "./signin.js";
import { MicButton, SpeechPlayer } from "./voice.js";
import { request, threadFeed } from "./voicestack.js";

const token = new URLSearchParams(location.search).get("token") || undefined;
// Without a token, the sign-in cookie: nobody signed in sees the sign-in screen and no app.
await signedIn(token);
const shell = document.querySelector(".app");
const NEW_HINT = "Send a message to start a new thread.";
const EMPTY_HINT = "No messages yet. Say something to start.";
const MISSING_HINT = "This thread does not exist. Pick one from the list or start a new one.";
const TITLE_CHARS = 60;

/** What is open: the thread id (null for a new, not yet created thread) and its feed. */
const open = { id: null, feed: null, state: null };

// ---- connection status: the worst of the thread list's stream and the open thread's feed ----
const RANK = { live: 0, connecting: 1, reconnecting: 2, offline: 3 };
const STATUS_TEXT = {
  live: "Live",
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};
const streams = { list: "connecting" };

function setStatus(name, state) {
  if (state === null) delete streams[name];
  else streams[name] = state;
  const worst = Object.values(streams).reduce((a, b) => (RANK[b] > RANK[a] ? b : a), "live");
  const badge = byId("conn");
  badge.dataset.state = worst;
  byId("conn-text").textContent = STATUS_TEXT[worst];
}

// ---- drawers on narrow screens ----
function toggleDrawer(name, open) {
  const isOpen = shell.dataset.drawer === name;
  const next = (open ?? !isOpen) ? name : "none";
  shell.dataset.drawer = next;
  byId("toggle-threads").setAttribute("aria-expanded", String(next === "threads"));
  byId("toggle-tools").setAttribute("aria-expanded", String(next === "tools"));
  byId("scrim").hidden = next === "none";
}

byId("toggle-threads").addEventListener("click", () => toggleDrawer("threads"));
byId("toggle-tools").addEventListener("click", () => toggleDrawer("tools"));
byId("scrim").addEventListener("click", () => toggleDrawer("none", true));
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && shell.dataset.drawer !== "none") toggleDrawer("none", true);
});

// ---- the parts of the page ----
const threads = new ThreadList({
  token,
  onStatus: (state, err) => {
    setStatus("list", state);
    if (err?.fatal) toast(err.message); // a refused token, say
  },
});
const conversation = new Conversation({ onChip: revealToolCall, onListen: listen });
const panel = new ToolPanel({ token, onCount: showToolCount });
const player = new SpeechPlayer({
  token,
  onChange: (messageId, playing) =>
    conversation.setSpeaking(playing ? messageId : null, open.state),
});
const composer = new Composer({ onSend: send, onStop: stop });
new MicButton(byId("mic"), {
  token,
  threadId: () => ensureThread(`Voice note, ${shortTime(Date.now() / 1000)}`),
  onSent: (answer) => player.follow(answer.replyId, open.state?.speech.get(answer.replyId)),
  onError: (message) => toast(message),
});
const talk = new Talk({
  token,
  threadId: () => ensureThread(`Conversation, ${shortTime(Date.now() / 1000)}`),
  onStart: () => player.stop(), // one voice at a time
  onError: (message) => toast(message),
});

function showToolCount({ total, waiting }) {
  const badge = byId("tools-badge");
  badge.hidden = total === 0;
  badge.textContent = String(waiting || total);
  badge.dataset.waiting = String(waiting > 0);
  byId("toggle-tools").setAttribute(
    "aria-label",
    waiting ? `Tool calls, ${waiting} waiting for approval` : `Tool calls (${total})`,
  );
}

function revealToolCall(callId) {
  const card = document.getElementById(`tool-${callId}`);
  if (!card) return;
  if (getComputedStyle(byId("toggle-tools")).display !== "none") toggleDrawer("tools", true);
  card.scrollIntoView({ block: "nearest", behavior: "smooth" });
  card.classList.remove("flash");
  void card.offsetWidth; // restart the highlight animation
  card.classList.add("flash");
  card.focus({ preventScroll: true });
}

function listen(messageId, speaking = false) {
  if (speaking) return player.stop();
  const row = open.state?.messages.get(messageId);
  if (row?.role === "user" && row.audioFileId) player.playFile(row.audioFileId);
  else player.follow(messageId, open.state?.speech.get(messageId));
}

function refreshReplying() {
  const rows = [...open.state.messages.values()];
  composer.setReplying(rows.some(isActive));
  conversation.showUsage(rows);
}

function setTitle(title) {
  conversation.setTitle(title);
  document.title = `${title} · voicestack`;
}

// ---- agents: the open thread's, and the one a new thread will have ----
const agentPicker = byId("agent-picker");
let agentNames = [];

request("/api/agents", { token })
  .then((agents) => {
    agentNames = agents.map((agent) => agent.name);
    agentPicker.replaceChildren(
      ...agents.map((agent) => {
        const option = document.createElement("option");
        option.value = agent.name;
        option.textContent = agent.name;
        option.title = agent.description || "";
        return option;
      }),
    );
    showAgent(open.id ? threads.agent(open.id) : null);
  })
  .catch(() => {}); // the thread list reports a server it cannot reach

/** Show the open thread's agent, or (on a new thread) the picker when there is a choice. */
function showAgent(agent) {
  const label = byId("thread-agent");
  label.textContent = agent ? `Agent: ${agent}` : "";
  label.hidden = !agent;
  byId("agent-choice").hidden = open.id !== null || agentNames.length < 2;
}

function closeThread() {
  talk.close();
  open.feed?.close();
  open.feed = null;
  open.state = null;
  player.stop();
  panel.clear();
  composer.setReplying(false);
  setStatus("feed", null);
}

/** Open thread `id`: its snapshot, then its live feed. */
function openThread(id) {
  closeThread();
  open.id = id;
  threads.select(id);
  const known = threads.title(id);
  conversation.reset(known || "Loading…", EMPTY_HINT);
  setTitle(known || "Loading…");
  showAgent(threads.agent(id));
  if (known === null) {
    request(`/api/threads/${encodeURIComponent(id)}`, { token })
      .then((thread) => {
        if (open.id !== id) return;
        setTitle(thread.title || UNTITLED);
        showAgent(thread.agent);
      })
      .catch(() => {}); // the feed reports a missing thread
  }
  setStatus("feed", "connecting");
  open.feed = threadFeed(
    id,
    {
      message: (row, state) => {
        conversation.show(row, state);
        refreshReplying();
      },
      delta: (_delta, row, state) => {
        if (document.getElementById(`msg-${row.id}`)) conversation.grow(row);
        else conversation.show(row, state); // resumed past its creation: first sight of it
      },
      toolCall: (call) => {
        panel.show(call);
        conversation.chip(call);
      },
      speech: (segment, state) => {
        const row = state.messages.get(segment.messageId);
        if (row) conversation.show(row, state);
        player.add(segment);
      },
      ready: () => conversation.scrollToEnd(),
      open: () => setStatus("feed", "live"),
      error: (err) => {
        if (!err.fatal) {
          if (err.retrying) setStatus("feed", "reconnecting");
          return;
        }
        if (err.code === "thread_not_found") {
          // Not a connection problem: the server answered, there is just no such thread.
          setStatus("feed", null);
          conversation.reset("Thread not found", MISSING_HINT);
          setTitle("Thread not found");
        } else {
          setStatus("feed", "offline");
        }
        toast(err.message);
      },
    },
    { token },
  );
  open.state = open.feed.state;
  threads.onChange = () => {
    if (open.id !== id || !threads.title(id)) return;
    setTitle(threads.title(id));
    showAgent(threads.agent(id)); // a handoff changes it
  };
}

function startNewThread() {
  closeThread();
  open.id = null;
  threads.select(null);
  conversation.reset("New thread", NEW_HINT);
  setTitle("New thread");
  showAgent(null);
}

function route() {
  const id = decodeURIComponent(location.hash.slice(1));
  toggleDrawer("none", true);
  if (id && id !== "new") openThread(id);
  else startNewThread();
  // On a phone, focusing the box would pop the keyboard up over the thread: focus its title.
  if (id && id !== "new" && matchMedia("(max-width: 760px)").matches) byId("thread-title").focus();
  else composer.focus();
}

/** A title from the first words of a message. */
function titleFrom(text) {
  const line = text.split("\n")[0].replace(/\s+/g, " ").trim();
  if (line.length <= TITLE_CHARS) return line;
  const cut = line.slice(0, TITLE_CHARS);
  return `${cut.slice(0, cut.lastIndexOf(" ") > 20 ? cut.lastIndexOf(" ") : TITLE_CHARS)}…`;
}

/** The open thread's id, creating the thread first when the page shows a new one. */
async function ensureThread(title) {
  if (open.id) return open.id;
  const agent = agentPicker.value || undefined;
  const body = { title, agent };
  const { id } = await request("/api/threads", { method: "POST", body, token });
  history.pushState(null, "", `#${id}`);
  openThread(id);
  return id;
}

async function send(text) {
  try {
    const id = await ensureThread(titleFrom(text));
    await request(`/api/threads/${encodeURIComponent(id)}/messages`, {
      method: "POST",
      body: { text },
      token,
    });
  } catch (err) {
    toast(err.message);
    throw err; // keep the text in the box
  }
}

async function stop() {
  if (!open.id) return;
  try {
    await request(`/api/threads/${encodeURIComponent(open.id)}/cancel`, { method: "POST", token });
  } catch (err) {
    toast(err.message);
  }
}

byId("new-thread").addEventListener("click", () => {
  if (location.hash && location.hash !== "#new") location.hash = "new";
  else route();
});
window.addEventListener("hashchange", route);
route();
