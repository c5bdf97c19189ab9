// A lucky draw's winners as docs/draws.md defines them (interact/draw_verify.py is the same
// function in Python): anyone with the seed and the eligible entries gets the same winners.

function utf8Compare(a, b) {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i += 1) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/** The entries in the order of their UTF-8 bytes (the draw's eligible list is sorted so). */
export function utf8Sorted(entries) {
  return [...entries].sort(utf8Compare);
}

/** The hex SHA-256 of a text's UTF-8 bytes (needs a secure context: https or loopback). */
export async function sha256Hex(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A seeded partial Fisher-Yates shuffle of the eligible entries sorted by their UTF-8 bytes
 * (j = k + int(sha256("{seed}:{k}"), 16) mod (n - k)); the winners are its first `count`. */
export async function drawWinners(seed, eligible, count) {
  const pool = utf8Sorted(eligible);
  const n = Math.min(count, pool.length);
  for (let k = 0; k < n; k += 1) {
    const h = BigInt(`0x${await sha256Hex(`${seed}:${k}`)}`);
    const j = k + Number(h % BigInt(pool.length - k));
    [pool[k], pool[j]] = [pool[j], pool[k]];
  }
  return pool.slice(0, n);
}
