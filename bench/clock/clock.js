//! The latency clock's picture format, shared by the captured tab (drawClock) and the player-side reader
// (readClock): the time in ms mod 2^32 as 32 blocks (white = 1, most significant bit first) in one row,
// the complement in the row below, both spanning the frame so they survive scaling and compression.
const CLOCK_BITS = 32;
const CLOCK_ROWS = [[0.12, 0.32], [0.36, 0.56]]; // top and bottom of each row, as fractions of the height

function drawClock(g, w, h, now) {
  const v = now % 2 ** 32;
  const cell = w / (CLOCK_BITS + 2);
  g.fillStyle = '#808080';
  g.fillRect(0, 0, w, h);
  for (let i = 0; i < CLOCK_BITS; i++) {
    const bit = Math.floor(v / 2 ** (CLOCK_BITS - 1 - i)) % 2;
    CLOCK_ROWS.forEach(([top, bottom], row) => {
      g.fillStyle = (bit ^ row) ? '#ffffff' : '#000000';
      g.fillRect(Math.round(cell * (i + 1)), Math.round(h * top), Math.ceil(cell), Math.ceil(h * (bottom - top)));
    });
  }
  g.fillStyle = '#000000';
  g.font = `${Math.round(h / 8)}px monospace`;
  g.fillText(String(now), cell, h * 0.8);
}

/** Read the clock from RGBA pixels of a w x h frame: the value (ms mod 2^32) or null when unreadable. */
function readClock(data, w, h) {
  const cell = w / (CLOCK_BITS + 2);
  const lum = (x0, y0, x1, y1) => {
    let sum = 0; let n = 0;
    for (let y = Math.round(y0); y < Math.round(y1); y++) {
      for (let x = Math.round(x0); x < Math.round(x1); x++) {
        const o = (y * w + x) * 4;
        sum += 0.299 * data[o] + 0.587 * data[o + 1] + 0.114 * data[o + 2]; n++;
      }
    }
    return n ? sum / n : 0;
  };
  let v = 0;
  for (let i = 0; i < CLOCK_BITS; i++) {
    const x0 = cell * (i + 1.3); const x1 = cell * (i + 1.7);
    const [a, b] = CLOCK_ROWS.map(([top, bottom]) => lum(x0, h * (top + (bottom - top) * 0.3), x1, h * (bottom - (bottom - top) * 0.3)));
    if (Math.abs(a - b) < 64) return null;
    v = v * 2 + (a > b ? 1 : 0);
  }
  return v;
}
