// Type declarations for live-client.js. Objects from the server are the protocol's
// (docs/protocol.md) and the HTTP API's (docs/http-api.md), snake_case as on the wire; the
// server may add fields at any time, so every object also allows unknown keys.

// -- errors -----------------------------------------------------------------------------------------

export class LiveError extends Error {
  constructor(code: string, message?: string, data?: Record<string, unknown>, status?: number | null);
  /** The codes this class stands for (the first is its default). */
  static codes: string[];
  /** The server's error code (`sold_out`, `token_expired`, ...). */
  code: string;
  /** The server's message (the code when it sent none). */
  message: string;
  /** The error object's other fields: `available`, `min_bid_cents`, `option`, ... */
  data: Record<string, unknown>;
  /** The HTTP status, for HostClient errors; null for the WebSocket's. */
  status: number | null;
}

type ErrorClass = typeof LiveError;
export const ConnectionLost: ErrorClass;
export const RequestTimeout: ErrorClass;
export const Closed: ErrorClass;
export const Unauthorized: ErrorClass;
export const TokenExpired: ErrorClass;
export const Forbidden: ErrorClass;
export const WrongRoom: ErrorClass;
export const Banned: ErrorClass;
export const LoginRequired: ErrorClass;
export const ProtectedUser: ErrorClass;
export const NotFound: ErrorClass;
export const RoomNotFound: ErrorClass;
export const ProductNotFound: ErrorClass;
export const UnknownSale: ErrorClass;
export const HoldNotFound: ErrorClass;
export const OrderNotFound: ErrorClass;
export const BatchNotFound: ErrorClass;
export const TeamNotFound: ErrorClass;
export const AuctionNotFound: ErrorClass;
export const QuestionNotFound: ErrorClass;
export const DrawNotFound: ErrorClass;
export const PollNotFound: ErrorClass;
export const BadRequest: ErrorClass;
export const MissingField: ErrorClass;
export const InvalidField: ErrorClass;
export const RetryLater: ErrorClass;
export const RateLimited: ErrorClass;
export const Unavailable: ErrorClass;
export const Frozen: ErrorClass;
export const InternalError: ErrorClass;
export const ChatRefused: ErrorClass;
export const CommentTooLong: ErrorClass;
export const BannedWords: ErrorClass;
export const Muted: ErrorClass;
export const SlowMode: ErrorClass;
export const InvalidText: ErrorClass;
export const BuyError: ErrorClass;
export const SoldOut: ErrorClass;
export const InsufficientStock: ErrorClass;
export const LimitReached: ErrorClass;
export const InvalidQuantity: ErrorClass;
export const NotStarted: ErrorClass;
export const SaleOver: ErrorClass;
export const Duplicate: ErrorClass;
export const NotYourHold: ErrorClass;
export const HoldExpired: ErrorClass;
export const AlreadyConfirmed: ErrorClass;
export const InTeam: ErrorClass;
export const PaymentFailed: ErrorClass;
export const AmountChanged: ErrorClass;
export const CouponInvalid: ErrorClass;
export const CouponsGone: ErrorClass;
export const NotGroupSale: ErrorClass;
export const TeamClosed: ErrorClass;
export const AlreadyInTeam: ErrorClass;
export const TeamExists: ErrorClass;
export const AuctionError: ErrorClass;
export const AuctionOver: ErrorClass;
export const BidTooLow: ErrorClass;
export const InvalidAmount: ErrorClass;
export const OwnAuction: ErrorClass;
export const NotYourOffer: ErrorClass;
export const OfferExpired: ErrorClass;
export const QueueFull: ErrorClass;
export const QuestionClosed: ErrorClass;
export const OwnQuestion: ErrorClass;
export const DrawError: ErrorClass;
export const DrawOver: ErrorClass;
export const DrawOpen: ErrorClass;
export const KeywordRequired: ErrorClass;
export const DrawFull: ErrorClass;
export const NotAWinner: ErrorClass;
export const ClaimExpired: ErrorClass;
export const PollError: ErrorClass;
export const PollOver: ErrorClass;
export const InvalidOption: ErrorClass;
export const AlreadyVoted: ErrorClass;
export const Conflict: ErrorClass;
export const LimitExceeded: ErrorClass;

/** Every error code this client knows, with its class. */
export const ERRORS: Readonly<Record<string, ErrorClass>>;
/** The typed error for an error object from the server. */
export function errorFrom(obj: unknown, status?: number | null): LiveError;

// -- MessagePack ------------------------------------------------------------------------------------

export type PackValue = null | boolean | number | bigint | string | Uint8Array | PackValue[] | { [key: string]: PackValue | undefined };
export function msgpackEncode(value: PackValue): Uint8Array;
export function msgpackDecode(bytes: Uint8Array | ArrayBuffer): PackValue;

// -- the protocol's objects -------------------------------------------------------------------------

type Open = { [key: string]: unknown };

export interface Product extends Open {
  id: string;
  room_id?: string;
  title: string;
  price_cents: number;
  image_url?: string | null;
  created_at_ms?: number;
}

export interface Sale extends Open {
  id: string;
  room_id?: string;
  product_id: string;
  product?: Product | null;
  phase?: string;
  total: number;
  available: number;
  held?: number;
  sold?: number;
  price_cents: number;
  per_user_limit?: number;
  starts_at_ms?: number;
  ends_at_ms?: number;
  hold_ms?: number;
  group?: { size: number; price_cents: number; team_ms?: number } | null;
  /** HTTP only: open or stopped. */
  state?: string;
}

export interface Room extends Open {
  id: string;
  title: string;
  host_id: string;
  allow_anonymous?: boolean;
  created_at_ms?: number;
  products?: Product[];
  sales?: Sale[];
  auctions?: Open[];
  questions?: Question[];
  draws?: Open[];
  polls?: Open[];
}

export interface Comment extends Open {
  id: number;
  seq?: number;
  user_id: string;
  role?: string;
  text: string;
  ts_ms?: number;
}

export interface Hold extends Open {
  hold_id: string;
  sale_id: string;
  quantity: number;
  expires_at_ms: number;
}

export interface Order extends Open {
  order_id: string;
  sale_id?: string;
  quantity?: number;
  unit_price_cents?: number;
  discount_cents?: number;
  amount_cents: number;
  coupon_id?: string | null;
  team_code?: string | null;
  confirmed_at_ms?: number;
  user_id?: string | null;
}

export interface Coupon extends Open {
  coupon_id: string;
  sale_id: string;
  discount_cents: number;
}

export interface Team extends Open {
  hold_id?: string;
  sale_id: string;
  code: string;
  deadline_ms?: number;
  members?: number;
  size?: number;
  completed?: boolean;
}

export interface Question extends Open {
  id: string;
  user_id?: string;
  text: string;
  upvotes?: number;
  state?: string;
  pinned?: boolean;
}

export interface Welcome extends Open {
  type: "welcome";
  v?: number;
  server_time_ms: number;
  seq: number;
  resumed: boolean;
  room: Room;
  user: { id: string; role: string; [key: string]: unknown };
  online?: number;
  likes?: number;
  slow_mode_s?: number;
  pinned?: Product | null;
  comments: Comment[];
  /** A signed-in buyer's own holds, orders, coupons and teams in this room (absent for guests). */
  you?: { holds?: Hold[]; orders?: Order[]; coupons?: Coupon[]; teams?: Team[]; [key: string]: unknown };
}

/** Any server message: `type` says which (docs/protocol.md "Server -> client"). */
export interface Message extends Open {
  type: string;
  seq?: number;
  rid?: string;
}

export interface Ack extends Message {
  type: "ack";
  rid: string;
  of?: string;
}

export type State = "connecting" | "live" | "reconnecting" | "offline" | "banned" | "expired" | "refused";
export type Framing = "json" | "msgpack";
export type Auth = "message" | "query";

// -- RoomClient -------------------------------------------------------------------------------------

export const SUBPROTOCOLS: Readonly<Record<Framing, string>>;
export const AUTH_MODES: readonly Auth[];
/** The WebSocket URL of a room on a server (http(s):// or ws(s):// base). */
export function roomUrl(base: string, room: string): string;
/** The wait (ms) before reconnect attempt `attempt`: backoff with jitter, at least the hint plus jitter. */
export function backoffDelay(
  attempt: number,
  hintMs?: number | null,
  options?: { initialMs?: number; maxMs?: number; random?: () => number },
): number;
/** What a close says: a final typed error, or the least wait before reconnecting. */
export function readClose(code: number, reason: string, refused?: Message | null): { error: LiveError; hintMs?: undefined } | { error?: undefined; hintMs: number | null };

export interface RoomClientOptions {
  /** A JWT; null for a guest in a room with allow_anonymous. */
  token?: string | null;
  /** With a server base URL: the room id. */
  room?: string | null;
  /** Default "msgpack". */
  framing?: Framing;
  /** "message" (default: the token in the first message, never in the URL) or "query" (?token=). */
  auth?: Auth;
  requestTimeoutMs?: number;
  /** connect() rejects with RequestTimeout (and the client closes) after this; Infinity: never. */
  connectTimeoutMs?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** A WebSocket constructor (default: the global one; Node 20 needs --experimental-websocket). */
  WebSocket?: new (url: string, protocol: string) => WebSocket;
}

export interface RequestOptions {
  rid?: string;
  /** The server decides it once per rid: send it again (same rid) after a lost answer. */
  resend?: boolean;
  timeoutMs?: number;
}

export interface RoomStats {
  reconnects: number;
  duplicatesDropped: number;
  laggedFrames: number;
  laggedComments: number;
  skippedComments: number;
  resent: number;
  failedConnects: number;
  lastCloseCode: number | null;
  lastCloseReason: string;
}

export interface RoomClientEventMap {
  message: CustomEvent<Message>;
  state: CustomEvent<State>;
}

export class RoomClient extends EventTarget {
  constructor(url: string, options?: RoomClientOptions);
  readonly url: string;
  readonly framing: Framing;
  readonly auth: Auth;
  /** The latest welcome (null before the first). */
  welcome: Welcome | null;
  /** The highest room seq delivered. */
  lastSeq: number | null;
  /** The typed error the client stopped with (banned, expired, refused). */
  refusal: LiveError | null;
  state: State;
  readonly stats: RoomStats;
  readonly connected: boolean;

  connect(): Promise<Welcome>;
  close(): void;
  /** The server's clock now, ms since the epoch. */
  now(): number;
  nowMs(): number;
  resumeFrom(): number;
  [Symbol.asyncIterator](): AsyncIterator<Message>;

  addEventListener<K extends keyof RoomClientEventMap>(type: K, listener: (event: RoomClientEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof RoomClientEventMap>(type: K, listener: (event: RoomClientEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;

  /** A message without a rid (like, ping), sent when live. */
  send(type: string, fields?: Record<string, unknown>): void;
  /** A command with a rid: its ack (or pong), or its typed error. */
  request<T extends Message = Ack>(type: string, fields?: Record<string, unknown>, options?: RequestOptions | number): Promise<T>;

  ping(options?: { rid?: string }): Promise<number>;
  /** The comment's id. */
  comment(text: string, options?: { rid?: string }): Promise<number>;
  like(count?: number): void;
  reserve(saleId: string, quantity?: number, options?: { rid?: string }): Promise<Hold & Ack>;
  confirm(holdId: string, couponId?: string | null, options?: { rid?: string }): Promise<Order>;
  pay(holdId: string, couponId?: string | null, options?: { rid?: string }): Promise<Order>;
  cancel(holdId: string, options?: { rid?: string }): Promise<{ hold_id: string; quantity: number } & Ack>;
  openTeam(saleId: string, quantity?: number, options?: { rid?: string }): Promise<Team & Ack>;
  joinTeam(saleId: string, code: string, quantity?: number, options?: { rid?: string }): Promise<Team & Ack>;
  claimCoupon(saleId: string, batchId: string, options?: { rid?: string }): Promise<Coupon & Ack>;
  bid(auctionId: string, amountCents: number, options?: { rid?: string }): Promise<Ack & { auction_id: string; amount_cents: number; bid_seq: number; ends_at_ms: number; extended?: boolean }>;
  payAuction(auctionId: string, options?: { rid?: string }): Promise<Order>;
  enterDraw(drawId: string, options?: { rid?: string }): Promise<boolean>;
  claimPrize(drawId: string, options?: { rid?: string }): Promise<Ack & { draw_id: string; order?: Order; coupon?: Coupon }>;
  vote(pollId: string, option: number, options?: { rid?: string }): Promise<Ack & { poll_id: string; option: number }>;
  ask(text: string, options?: { rid?: string }): Promise<Question>;
  upvote(questionId: string, options?: { rid?: string }): Promise<number>;
  hostMessage(text: string): Promise<Ack>;
  pinProduct(productId: string): Promise<Ack>;
  unpinProduct(): Promise<Ack>;
  mute(userId: string, durationS: number): Promise<Ack>;
  unmute(userId: string): Promise<Ack>;
  ban(userId: string): Promise<Ack>;
  unban(userId: string): Promise<Ack>;
  deleteComment(commentId: number): Promise<Ack>;
  slowMode(intervalS: number): Promise<Ack>;
  clearChat(): Promise<Ack>;
  answerQuestion(questionId: string): Promise<Question>;
  pinQuestion(questionId: string): Promise<Question>;
  unpinQuestion(questionId: string): Promise<Question>;
  dismissQuestion(questionId: string): Promise<Question>;
}

// -- HostClient -------------------------------------------------------------------------------------

export interface OrdersPage extends Open {
  sale_id: string;
  orders: Order[];
  cursor: string;
  more: boolean;
}

export class HostClient {
  constructor(baseUrl: string, token: string | null, options?: { timeoutMs?: number; fetch?: typeof fetch });
  readonly baseUrl: string;
  call<T = Open>(method: string, path: string, body?: unknown, query?: Record<string, string | number | boolean | null | undefined>): Promise<T>;
  createRoom(title: string, options?: { id?: string; allow_anonymous?: boolean }): Promise<Room>;
  listRooms(options?: { after?: string; limit?: number }): Promise<Room[]>;
  getRoom(room: string): Promise<Room>;
  createProduct(room: string, title: string, priceCents: number, options?: { image_url?: string }): Promise<Product>;
  listProducts(room: string): Promise<Product[]>;
  createSale(
    room: string,
    productId: string,
    stock: number,
    fields?: {
      price_cents?: number;
      per_user_limit?: number;
      starts_in_s?: number;
      starts_at_ms?: number;
      duration_s?: number;
      hold_s?: number;
      group?: { size: number; price_cents: number; team_s?: number };
    },
  ): Promise<Sale>;
  listSales(room: string): Promise<Sale[]>;
  getSale(sale: string): Promise<Sale>;
  stopSale(sale: string): Promise<Sale>;
  addStock(sale: string, units: number): Promise<Sale>;
  dropCoupons(sale: string, count: number, discountCents: number): Promise<Open>;
  getCouponBatch(sale: string, batch: string): Promise<Open>;
  getTeam(sale: string, code: string): Promise<Open>;
  getOrder(order: string): Promise<Order>;
  saleOrders(sale: string, options?: { after?: string; limit?: number }): Promise<OrdersPage>;
  openAuction(room: string, fields: Open): Promise<Open>;
  listAuctions(room: string): Promise<Open[]>;
  getAuction(room: string, auction: string): Promise<Open>;
  auctionBids(room: string, auction: string): Promise<Open>;
  listQuestions(room: string, options?: { limit?: number }): Promise<Open>;
  questionAction(room: string, question: string, action: "answer" | "pin" | "unpin" | "dismiss"): Promise<Open>;
  openDraw(room: string, fields: Open): Promise<Open>;
  listDraws(room: string): Promise<Open[]>;
  getDraw(room: string, draw: string): Promise<Open>;
  drawVerification(room: string, draw: string): Promise<Open>;
  closeDraw(room: string, draw: string): Promise<Open>;
  openPoll(room: string, fields: Open): Promise<Open>;
  listPolls(room: string): Promise<Open[]>;
  getPoll(room: string, poll: string): Promise<Open>;
  closePoll(room: string, poll: string): Promise<Open>;
}
