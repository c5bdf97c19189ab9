// Node socket.io 4 fan-out peer, from shared/peer-bench/socketio_server.js.
//   NODE_PATH=DIR/node_modules node socketio_server.js PORT M
// Every connection joins one room; the event "go" makes the server emit one ~150-byte JSON
// string M times to the room (yielding to the event loop every 10 messages).
const { Server } = require("socket.io");

const port = parseInt(process.argv[2], 10);
const M = parseInt(process.argv[3], 10);
const PAYLOAD = JSON.stringify({ t: "comment", user: "viewer123", text: "这个多少钱？好看！".repeat(3) });
const io = new Server(port, { transports: ["websocket"], perMessageDeflate: false });

io.on("connection", (s) => {
  s.join("room");
  s.on("go", async () => {
    for (let i = 0; i < M; i++) {
      io.to("room").emit("c", PAYLOAD);
      if (i % 10 === 0) await new Promise((r) => setImmediate(r));
    }
  });
});
