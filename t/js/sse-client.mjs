// Subscribes with one of the Node SSE client libraries people use and reports what the
// application sees, one JSON line per happening on stdout (t/clients.t reads them):
//
//   {"kind":"open"}                                   a connection is open (again)
//   {"kind":"event","type":..,"data":..,"id":..}      an event; id is its lastEventId
//   {"kind":"error"}                                  the stream ended or failed
//   {"kind":"reconnect","delay":ms}                   eventsource-client only: its retry delay
//
//   node sse-client.mjs <eventsource|undici|eventsource-client> <url> [type,...] [seconds]
//
// The client reconnects by itself; the process runs until it is killed, at most `seconds`
// (default 120), then exits 2.
const [clientName, url, typeList = '', seconds = '120'] = process.argv.slice(2);
const types = ['message', ...typeList.split(',').filter(Boolean)];

const report = (what) => process.stdout.write(`${JSON.stringify(what)}\n`);

// The EventSource interface (eventsource@4 and undici): listeners per event type, as a page
// would register them.
function watchEventSource(EventSource) {
  const es = new EventSource(url);
  es.onopen = () => report({ kind: 'open' });
  es.onerror = () => report({ kind: 'error' });
  for (const type of types) {
    es.addEventListener(type, (e) =>
      report({ kind: 'event', type: e.type, data: e.data, id: e.lastEventId }));
  }
}

const clients = {
  eventsource: async () => watchEventSource((await import('eventsource')).EventSource),
  undici: async () => watchEventSource((await import('undici')).EventSource),
  // Not the EventSource interface: one callback for every event, whatever its type.
  'eventsource-client': async () => {
    const { createEventSource } = await import('eventsource-client');
    const es = createEventSource({
      url,
      onConnect: () => report({ kind: 'open' }),
      onDisconnect: () => report({ kind: 'error' }),
      onScheduleReconnect: ({ delay }) => report({ kind: 'reconnect', delay }),
      onMessage: (m) => report({ kind: 'event', type: m.event ?? 'message', data: m.data,
                                 id: es.lastEventId ?? '' }),
    });
  },
};

if (!clients[clientName] || !url) {
  console.error(`usage: node sse-client.mjs <${Object.keys(clients).join('|')}> <url> [type,...] [seconds]`);
  process.exit(2);
}
// Also keeps the process alive while a client waits to reconnect (undici's timer does not).
setTimeout(() => {
  report({ kind: 'timeout' });
  process.exit(2);
}, Number(seconds) * 1000);
await clients[clientName]();
