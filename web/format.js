// Pure helpers of presentation: links, days, grouping, names. No DOM, no state.

/** Messages of one sender closer than this share one header. */
export const GROUP_GAP_MS = 5 * 60 * 1000;

/** When a message was said (stored timestamp, else when it was typed). */
export const whenOf = (m) => new Date(m.timestamp || m.created || Date.now());

/** Whether `m` is shown under the header of `prev` (same sender, same day, close in time, not failed). */
export function groupsWith(prev, m, { failed = false } = {}) {
  if (!prev || failed || prev.sender_id !== m.sender_id) return false;
  const a = whenOf(prev);
  const b = whenOf(m);
  return a.toDateString() === b.toDateString() && b - a < GROUP_GAP_MS;
}

/** The day key of a message, for day separators. */
export const dayKey = (m) => whenOf(m).toDateString();

/** "Today", "Yesterday", else e.g. "Monday, March 3" (`fmt` formats the last case). */
export function dayLabel(d, today = new Date(), fmt = (x) => x.toDateString()) {
  const yesterday = new Date(today);
  yesterday.setDate(today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return "Today";
  if (d.toDateString() === yesterday.toDateString()) return "Yesterday";
  return fmt(d);
}

const URL_RE = /\bhttps?:\/\/[^\s<>"']+/gi;
const TRAILING = /[.,;:!?)\]}]$/;

/** A link's end: trailing punctuation is prose, except a `)` that closes a `(` of the URL. */
function trimUrl(url) {
  for (;;) {
    const last = url.at(-1);
    if (!last || !TRAILING.test(last)) return url;
    if (last === ")") {
      const opens = url.split("(").length - 1;
      const closes = url.split(")").length - 1;
      if (opens >= closes) return url;
    }
    url = url.slice(0, -1);
  }
}

/**
 * Splits text into plain parts and http(s) links: `[{text}, {url}, ...]`.
 * Only what `new URL` accepts as http or https becomes a link.
 */
export function linkParts(text) {
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    const url = trimUrl(match[0]);
    const start = match.index;
    if (start > last) parts.push({ text: text.slice(last, start) });
    let ok = false;
    try {
      const u = new URL(url);
      ok = u.protocol === "http:" || u.protocol === "https:";
    } catch {
      ok = false;
    }
    parts.push(ok ? { url } : { text: url });
    last = start + url.length;
  }
  if (last < text.length) parts.push({ text: text.slice(last) });
  return parts;
}

/** A stable hue (0..359) per user id, for avatars. */
export function hue(id) {
  let h = 0;
  for (const c of id) h = (h * 31 + c.codePointAt(0)) % 360;
  return h;
}

/** What an unknown id shows as until its name is known. */
export const shortId = (id) => (id.length > 12 ? `${id.slice(0, 8)}…` : id);

/** "A is typing…", "A and B are typing…", "Several people are typing…", or "". */
export function typingText(names) {
  const who = [...names].sort((a, b) => a.localeCompare(b));
  if (who.length === 1) return `${who[0]} is typing…`;
  if (who.length === 2) return `${who[0]} and ${who[1]} are typing…`;
  if (who.length > 2) return "Several people are typing…";
  return "";
}

/** A room name as typed ("#general ") to the name the server knows ("general"). */
export const normalizeRoom = (s) => s.trim().replace(/^#+/, "").trim();

/** Badge text of an unread count. */
export const badgeText = (n) => (n > 99 ? "99+" : String(n));

/**
 * The server's default `--max-content-bytes`, used until the server says its
 * own (`get_limits`, asked on each connection; a server without that call
 * keeps this one, and still refuses with its reason shown).
 */
export const MAX_CONTENT_BYTES = 4096;
/** The server's limit on ids, room names included (src/server/validate.rs), until it says. */
export const MAX_ID_BYTES = 128;

const utf8 = new TextEncoder();
/** Length in UTF-8 bytes, as the server counts content and ids. */
export const utf8Bytes = (s) => utf8.encode(s).length;

/** Why the server would refuse this message content, or null. */
export function contentProblem(text, limit = MAX_CONTENT_BYTES) {
  if (!text.trim()) return "The message is empty.";
  const n = utf8Bytes(text);
  return n > limit ? `Too long: ${n} bytes, the limit is ${limit}. Shorten it to send.` : null;
}

/** Why the server would refuse this room name (already normalized), or null. */
export function roomProblem(name, limit = MAX_ID_BYTES) {
  if (!name) return "Type a room name.";
  const n = utf8Bytes(name);
  return n > limit ? `Room names are at most ${limit} bytes; this one is ${n}.` : null;
}

/** "just now", "5 min ago", "3 h ago", "2 days ago", or the date for older ones. */
export function relativeTime(then, now = new Date(), fmt = (d) => d.toDateString()) {
  const s = Math.round((now - then) / 1000);
  if (!Number.isFinite(s)) return "";
  if (s < 60) return "just now";
  const min = Math.floor(s / 60);
  if (min < 60) return `${min} min ago`;
  const h = Math.floor(min / 60);
  if (h < 24) return `${h} h ago`;
  const days = Math.floor(h / 24);
  if (days < 30) return days === 1 ? "yesterday" : `${days} days ago`;
  return fmt(then);
}
