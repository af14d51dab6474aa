// mini-express.js: a tiny Express-like app on node:http, shared by the
// Express-like workloads (diagnosis/express-leak.js, sites/express-churn.js):
// app.use(mw), app.get(path, handler), res.send(body, status), and
// app.requests, counted by a first middleware that also stamps
// req.startedAt. The call chain of a request (app → next → middleware →
// next → handler) is the shape Express gives its stacks.
'use strict';

function createApp() {
  const middleware = [];
  const routes = new Map();
  const app = (req, res) => {
    res.send = (body, status = 200) => {
      const text = typeof body === 'string' ? body : JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    const path = req.url.split('?')[0];
    const handler = routes.get(`${req.method} ${path}`);
    let i = 0;
    const next = () => {
      const mw = middleware[i++];
      if (mw) return mw(req, res, next);
      if (handler) return handler(req, res);
      res.send('Not Found', 404);
    };
    next();
  };
  app.use = (fn) => middleware.push(fn);
  app.get = (path, fn) => routes.set(`GET ${path}`, fn);
  app.requests = 0;
  app.use((req, res, next) => {
    app.requests++;
    req.startedAt = Date.now();
    next();
  });
  return app;
}

module.exports = { createApp };
