// Runs a page script of the gateway's LTI platform-storage pages in a simulated browser
// frame: a parent window whose named frame answers lti.put_data / lti.get_data like an LMS
// (LTI Client Side postMessages), a document holding the page's JSON data block
// (#pgw-data, which the gateway's fixed scripts read) and able to build and submit forms,
// and a location that records navigation. Reads {script, data, origin, store} as JSON on
// stdin; prints {posted, navigated, submitted, store, shown} as JSON. Timers are recorded,
// not run, so only the message answers drive the page.
'use strict';
let input = '';
process.stdin.on('data', (c) => { input += c; });
process.stdin.on('end', () => {
  const { script, data, origin, store: initial, wrongOriginFirst } = JSON.parse(input);
  const store = Object.assign({}, initial || {});
  const out = { posted: [], navigated: null, submitted: null, store, timers: 0, shown: {} };
  const listeners = [];
  const deliver = (data, from) => listeners.forEach((l) => l({ origin: from, data }));
  const frame = {
    postMessage(msg, targetOrigin) {
      out.posted.push({ msg, targetOrigin });
      if (targetOrigin !== origin) return; // the platform only reads messages sent to it
      let answer = null;
      if (msg.subject === 'lti.put_data') {
        store[msg.key] = msg.value;
        answer = { subject: 'lti.put_data.response', message_id: msg.message_id, key: msg.key, value: msg.value };
      } else if (msg.subject === 'lti.get_data') {
        answer = { subject: 'lti.get_data.response', message_id: msg.message_id, key: msg.key, value: store[msg.key] };
      }
      if (answer) {
        if (wrongOriginFirst) deliver(Object.assign({}, answer, { value: 'forged' }), 'https://evil.example.com');
        deliver(answer, origin);
      }
    },
  };
  const parent = { frames: { post_message_forwarding: frame } };
  const elements = [];
  const document = {
    body: { appendChild() {} },
    getElementById(id) {
      if (id === 'pgw-data') return { textContent: data };
      // The recovery page's message and its hidden way out.
      if (id === 'm' || id === 'r') {
        const el = { hidden: true };
        out.shown[id] = el;
        return el;
      }
      return null;
    },
    createElement(tag) {
      const el = { tag, children: [], appendChild(c) { this.children.push(c); } };
      el.submit = () => {
        out.submitted = { method: el.method, action: el.action, fields: el.children.map((c) => [c.name, c.value]) };
      };
      elements.push(el);
      return el;
    },
  };
  const window = {
    parent,
    addEventListener(type, fn) { if (type === 'message') listeners.push(fn); },
    location: { replace(url) { out.navigated = url; } },
  };
  const setTimeout = () => { out.timers += 1; };
  new Function('window', 'document', 'setTimeout', script)(window, document, setTimeout);
  process.stdout.write(JSON.stringify(out));
});
