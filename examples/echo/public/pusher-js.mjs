// `import Pusher from 'pusher-js'` without a bundler: pusher-js ships no ES module build, so the
// page loads its browser build (/vendor/pusher.min.js, which sets window.Pusher) with a classic
// <script> first, and the import map points 'pusher-js' here.
export default window.Pusher;
