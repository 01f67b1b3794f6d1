// Lints event streams with eventsource-parser, a parser that shares no code with mod_sse or the
// test harness: every <name>.sse file in the given directory (the bytes a test client received)
// must be UTF-8, must hold no field a client would reject (`unknown-field`, `invalid-retry`),
// and must give the same events (data, type, last event id) and the same last retry as the
// harness's own WHATWG parser recorded in <name>.json.
//
//   node lint-streams.mjs <dir>     exit 0: all clean; 1: problems (listed); 2: usage
//
// No stream at all is a failure: a linter that read nothing proves nothing.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createParser } from 'eventsource-parser';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node lint-streams.mjs <dir>');
  process.exit(2);
}

// What eventsource-parser makes of one stream: events with the last event id as a browser sees
// it (the parser reports only the id field of the event itself), the last retry, its errors.
function parse(bytes) {
  const seen = { events: [], retry: null, errors: [] };
  let lastEventId = '';
  const parser = createParser({
    onEvent(ev) {
      if (ev.id !== undefined) lastEventId = ev.id;
      seen.events.push({ data: ev.data, event: ev.event ?? 'message', id: lastEventId });
    },
    onRetry(ms) { seen.retry = ms; },
    onComment() {},
    onError(err) { seen.errors.push(`${err.type}: ${JSON.stringify(err.line ?? err.message)}`); },
  });
  let text;
  try {
    // stream: a stream cut off by the client may end inside a character.
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes, { stream: true });
  } catch {
    seen.errors.push('not UTF-8');
    text = new TextDecoder('utf-8').decode(bytes);
  }
  parser.feed(text);
  return seen;
}

function describe(ev) {
  return JSON.stringify(ev);
}

const problems = [];
let streams = 0;
let events = 0;
let bytes = 0;
for (const name of readdirSync(dir).filter((n) => n.endsWith('.sse')).sort()) {
  const file = join(dir, name);
  const raw = readFileSync(file);
  let expected;
  try {
    expected = JSON.parse(readFileSync(file.replace(/\.sse$/, '.json'), 'utf8'));
  } catch (err) {
    problems.push(`${name}: no readable .json beside it (${err.message})`);
    continue;
  }
  const seen = parse(raw);
  streams++;
  events += seen.events.length;
  bytes += raw.length;
  for (const err of seen.errors) problems.push(`${name}: ${err}`);
  const want = expected.events;
  const n = Math.max(want.length, seen.events.length);
  for (let i = 0; i < n; i++) {
    const a = seen.events[i];
    const b = want[i] && { data: want[i].data, event: want[i].event, id: want[i].id };
    if (describe(a) !== describe(b)) {
      problems.push(`${name}: event ${i}: eventsource-parser ${describe(a)}, harness ${describe(b)}`);
      break;
    }
  }
  const wantRetry = expected.retry === null ? null : Number(expected.retry);
  if (seen.retry !== wantRetry) {
    problems.push(`${name}: retry: eventsource-parser ${seen.retry}, harness ${wantRetry}`);
  }
}

for (const p of problems) console.log(p);
console.log(`linted ${streams} streams, ${events} events, ${bytes} bytes: ${problems.length} problems`);
process.exit(problems.length || streams === 0 ? 1 : 0);
