//! The server side of a client handshake as a verdict machine.
//!
//! The caller keeps every byte it has read from the client in one buffer and hands the whole
//! buffer to [`ServerHandshake::handle_input`] after each read. The handshake only looks at
//! what is new, and answers with a [`Verdict`]:
//!
//! ```text
//!  bytes ──► Hello ──(valid ee hello)──► ServerHello{user} ──► Frame ──(64 bytes)──► Accepted
//!              │  └──(dd frame, secured on)───────────────────────────────────────► Accepted
//!              └──(anything else)──► Front{reason}          Frame ──(bad record/tag)──► Reject
//! ```
//!
//! * `NeedMore`: read more and call again.
//! * `ServerHello`: the server flight was appended to `out`: write it (or, if the app refuses
//!   this user, drop it and front the connection instead), then call again with the same
//!   bytes before reading more: the buffer may already hold the client's next records.
//! * `Accepted`: the client is authenticated; `consumed` bytes of the buffer belong to the
//!   handshake and the rest is relay input. Call [`ServerHandshake::into_session`].
//! * `Front`: replay every byte read so far to the fronting site and splice.
//! * `Reject`: close the connection.

use core::fmt;
use core::time::Duration;

use rand_core::RngCore;

use crate::obfs2::{self, FRAME_LEN, FrameHeader, LegCipher, TAG_PADDED_INTERMEDIATE};
use crate::relay::{ClientToDc, DcToClient, Session};
use crate::replay::ReplayCache;
use crate::tls::client_hello::{HelloError, HelloRecords};
use crate::tls::record::{Deframer, RecordError, TYPE_HANDSHAKE};
use crate::tls::server_hello::{self, AppDataLen};
use crate::users::{HostId, MatchOutcome, UserId, UserTable};

/// Settings of the handshake that come from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// Accepted distance between the hello's timestamp and `now` (`tolerate-time-skewness`).
    pub time_skew: Duration,
    /// Whether `dd` users may connect without FakeTLS (`[secured] enabled`).
    pub secured: bool,
    /// Length range of the fake certificate record in the server flight.
    pub app_data_len: AppDataLen,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        Self { time_skew: Duration::from_secs(3), secured: false, app_data_len: AppDataLen::default() }
    }
}

/// What the handshake needs from the outside world for one call.
pub struct HandshakeContext<'a> {
    /// The users to match against (the same table for every call of one handshake).
    pub users: &'a UserTable,
    /// The anti-replay cache.
    pub replay: &'a mut dyn ReplayCache,
    /// Randomness for the server flight.
    pub rng: &'a mut dyn RngCore,
    /// Wall-clock time since the Unix epoch.
    pub now: Duration,
    /// A user to try first (for example the last user matched from this client address).
    pub hint: Option<UserId>,
    /// Whether every user of the hello's hosts may be tried (one HMAC each). `false` tries the
    /// hint alone and fronts any other hello with [`FrontReason::SearchSkipped`] (the app's
    /// probe limit); [`FrontReason::BadDigest`] and [`FrontReason::TimeSkew`] always mean a
    /// full search was made and failed.
    pub full_search: bool,
}

impl fmt::Debug for HandshakeContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeContext")
            .field("now", &self.now)
            .field("hint", &self.hint)
            .field("full_search", &self.full_search)
            .finish_non_exhaustive()
    }
}

/// Which wrapper the client used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ee`: FakeTLS records around obfuscated2.
    FakeTls,
    /// `dd`: obfuscated2 straight on the socket.
    Secured,
}

/// Why a connection is handed to the fronting site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrontReason {
    /// The bytes are not an acceptable ClientHello.
    BadHello(HelloError),
    /// The SNI names no configured host.
    UnknownSni,
    /// No user's key signed the hello.
    BadDigest,
    /// The hinted user (if any) did not sign the hello and no full search was allowed.
    SearchSkipped,
    /// A key signed the hello, but its timestamp is outside the tolerance.
    TimeSkew,
    /// The hello (or `dd` frame) was seen before.
    Replay,
    /// Not TLS, and no `dd` user's key opens the frame.
    NoSecuredMatch,
}

impl fmt::Display for FrontReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadHello(e) => write!(f, "bad hello: {e}"),
            Self::UnknownSni => f.write_str("SNI names no configured host"),
            Self::BadDigest => f.write_str("no secret signed the hello"),
            Self::SearchSkipped => {
                f.write_str("no full search allowed (probe limit) and no hinted secret signed the hello")
            }
            Self::TimeSkew => f.write_str("hello timestamp outside the tolerated skew"),
            Self::Replay => f.write_str("replayed handshake"),
            Self::NoSecuredMatch => f.write_str("not TLS and no dd secret matches"),
        }
    }
}

/// Why an authenticated-so-far connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// A record after the hello was malformed.
    BadRecord(RecordError),
    /// The obfuscated2 tag is not padded intermediate (`dd dd dd dd`).
    BadTransportTag,
    /// `handle_input` was called after the handshake had ended (caller misuse).
    Finished,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRecord(e) => write!(f, "bad record: {e}"),
            Self::BadTransportTag => f.write_str("obfuscated2 tag is not padded intermediate"),
            Self::Finished => f.write_str("handshake already finished"),
        }
    }
}

/// The answer to one [`ServerHandshake::handle_input`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Read more bytes and call again.
    NeedMore,
    /// A valid FakeTLS hello from `user`: the server flight is in `out`.
    ServerHello {
        /// The matched user.
        user: UserId,
    },
    /// The client is authenticated.
    Accepted {
        /// The user.
        user: UserId,
        /// The DC the client asked for.
        dc: FrameHeader,
        /// FakeTLS or secured.
        mode: Mode,
        /// Bytes of the input that were the handshake; the rest is relay input.
        consumed: usize,
    },
    /// Hand the connection to the fronting site with every byte read so far.
    Front {
        /// Why.
        reason: FrontReason,
        /// The configured host the SNI named, if any (the fronting target by default).
        host: Option<HostId>,
    },
    /// Close the connection.
    Reject(RejectReason),
}

#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a handshake lives on the stack for one connection's first second; boxing would allocate per valid client"
)]
enum State {
    Hello,
    Frame { user: UserId, deframer: Deframer, scanned: usize, frame: [u8; FRAME_LEN], have: usize },
    Done { user: UserId, mode: Mode, client: LegCipher, deframer: Option<Deframer> },
    Failed,
}

/// One client's handshake. Cheap to create; holds no buffer of its own.
#[derive(Debug)]
pub struct ServerHandshake {
    config: HandshakeConfig,
    state: State,
}

impl ServerHandshake {
    /// A handshake waiting for the first byte.
    pub fn new(config: HandshakeConfig) -> Self {
        Self { config, state: State::Hello }
    }

    /// Feeds all bytes read so far (`received` only ever grows) and returns the verdict. The
    /// server flight, when there is one, is appended to `out`.
    pub fn handle_input(
        &mut self,
        received: &[u8],
        ctx: &mut HandshakeContext<'_>,
        out: &mut Vec<u8>,
    ) -> Verdict {
        let verdict = match self.state {
            State::Hello => self.on_hello(received, ctx, out),
            State::Frame { .. } => self.on_frame(received, ctx),
            State::Done { .. } | State::Failed => Verdict::Reject(RejectReason::Finished),
        };
        if matches!(verdict, Verdict::Front { .. } | Verdict::Reject(_)) {
            self.state = State::Failed;
        }
        verdict
    }

    fn on_hello(&mut self, received: &[u8], ctx: &mut HandshakeContext<'_>, out: &mut Vec<u8>) -> Verdict {
        if received.is_empty() {
            return Verdict::NeedMore;
        }
        if self.config.secured && !ctx.users.secured_users().is_empty() {
            // A dd frame is random: it may even begin with 0x16. TLS is taken only for a
            // `16 03 01` start; a would-be hello that fails is tried as a frame before fronting.
            const TLS_START: [u8; 3] = [TYPE_HANDSHAKE, 0x03, 0x01];
            let n = received.len().min(TLS_START.len());
            if received[..n] != TLS_START[..n] {
                return self.on_secured(received, ctx);
            }
            if n < TLS_START.len() {
                return Verdict::NeedMore;
            }
            let verdict = self.on_tls_hello(received, ctx, out);
            if let Verdict::Front { reason: FrontReason::BadHello(_), .. } = verdict {
                // Decide only on a whole frame, so the verdict does not depend on how the bytes
                // arrive (found by the `faketls` fuzz target).
                if received.len() < FRAME_LEN {
                    return Verdict::NeedMore;
                }
                if let secured @ Verdict::Accepted { .. } = self.on_secured(received, ctx) {
                    return secured;
                }
            }
            return verdict;
        }
        self.on_tls_hello(received, ctx, out)
    }

    fn on_tls_hello(
        &mut self,
        received: &[u8],
        ctx: &mut HandshakeContext<'_>,
        out: &mut Vec<u8>,
    ) -> Verdict {
        let records = match HelloRecords::scan(received) {
            Ok(Some(records)) => records,
            Ok(None) => return Verdict::NeedMore,
            Err(e) => {
                return Verdict::Front { reason: FrontReason::BadHello(e), host: None };
            }
        };
        let users = ctx.users;
        let hello = match records.parse(|name| users.host_id(name).map(|h| h.0)) {
            Ok(hello) => hello,
            Err(e) => {
                return Verdict::Front { reason: FrontReason::BadHello(e), host: None };
            }
        };
        let Some(&first_host) = hello.hosts().first() else {
            return Verdict::Front { reason: FrontReason::UnknownSni, host: None };
        };
        let host = Some(HostId(first_host));
        let tolerance = self.config.time_skew;
        let user = match users.match_hello(&records, &hello, ctx.now, tolerance, ctx.hint, ctx.full_search) {
            MatchOutcome::Matched(user) => user,
            MatchOutcome::Skipped => {
                return Verdict::Front { reason: FrontReason::SearchSkipped, host };
            }
            MatchOutcome::TimeSkew => {
                return Verdict::Front { reason: FrontReason::TimeSkew, host };
            }
            MatchOutcome::NoMatch => {
                return Verdict::Front { reason: FrontReason::BadDigest, host };
            }
        };
        if ctx.replay.check_and_insert(hello.session_id()) {
            return Verdict::Front { reason: FrontReason::Replay, host };
        }
        let Some(mac) = users.mac(user) else {
            return Verdict::Front { reason: FrontReason::BadDigest, host };
        };
        server_hello::write_flight(
            out,
            mac,
            &hello.random,
            hello.session_id(),
            hello.cipher_suite,
            self.config.app_data_len,
            ctx.rng,
        );
        self.state = State::Frame {
            user,
            deframer: Deframer::new(),
            scanned: records.consumed(),
            frame: [0; FRAME_LEN],
            have: 0,
        };
        Verdict::ServerHello { user }
    }

    fn on_secured(&mut self, received: &[u8], ctx: &mut HandshakeContext<'_>) -> Verdict {
        // A real client never starts a frame with these; refuse probes without waiting.
        let mut head = [0u8; FRAME_LEN];
        let n = received.len().min(FRAME_LEN);
        head[..n].copy_from_slice(&received[..n]);
        if (n >= 1 && head[0] == 0xef)
            || (n >= 4
                && obfs2::FORBIDDEN_PREFIXES
                    .contains(&u32::from_le_bytes([head[0], head[1], head[2], head[3]])))
            || (n >= 8 && head[4..8] == [0, 0, 0, 0])
        {
            return Verdict::Front { reason: FrontReason::NoSecuredMatch, host: None };
        }
        if n < FRAME_LEN {
            return Verdict::NeedMore;
        }
        for &user in ctx.users.secured_users() {
            let Some(key) = ctx.users.key(user) else {
                continue;
            };
            let (header, client) = obfs2::respond(&head, Some(key));
            if header.tag != TAG_PADDED_INTERMEDIATE {
                continue;
            }
            if ctx.replay.check_and_insert(&head[8..56]) {
                return Verdict::Front { reason: FrontReason::Replay, host: None };
            }
            self.state = State::Done { user, mode: Mode::Secured, client, deframer: None };
            return Verdict::Accepted { user, dc: header, mode: Mode::Secured, consumed: FRAME_LEN };
        }
        Verdict::Front { reason: FrontReason::NoSecuredMatch, host: None }
    }

    fn on_frame(&mut self, received: &[u8], ctx: &mut HandshakeContext<'_>) -> Verdict {
        let State::Frame { user, deframer, scanned, frame, have } = &mut self.state else {
            return Verdict::Reject(RejectReason::Finished);
        };
        while *have < FRAME_LEN && *scanned < received.len() {
            let step = match deframer.step(&received[*scanned..], FRAME_LEN - *have) {
                Ok(step) => step,
                Err(e) => return Verdict::Reject(RejectReason::BadRecord(e)),
            };
            if let Some(range) = step.payload {
                let src = &received[*scanned + range.start..*scanned + range.end];
                frame[*have..*have + src.len()].copy_from_slice(src);
                *have += src.len();
            }
            *scanned += step.consumed;
        }
        if *have < FRAME_LEN {
            return Verdict::NeedMore;
        }
        let user = *user;
        let Some(key) = ctx.users.key(user) else {
            return Verdict::Reject(RejectReason::Finished);
        };
        let (header, client) = obfs2::respond(frame, Some(key));
        if header.tag != TAG_PADDED_INTERMEDIATE {
            return Verdict::Reject(RejectReason::BadTransportTag);
        }
        let consumed = *scanned;
        let deframer = Some(core::mem::take(deframer));
        self.state = State::Done { user, mode: Mode::FakeTls, client, deframer };
        Verdict::Accepted { user, dc: header, mode: Mode::FakeTls, consumed }
    }

    /// After `Accepted`: opens the DC leg for `dc` (normally the client's DC, or the fallback
    /// the app chose) and returns the relay session and the 64-byte frame to send to the DC
    /// first. `None` if the handshake has not been accepted.
    pub fn into_session(
        self,
        dc: i16,
        rng: &mut (impl RngCore + ?Sized),
    ) -> Option<(Session, [u8; FRAME_LEN])> {
        let State::Done { user, mode, client, deframer } = self.state else {
            return None;
        };
        let (frame, dc_leg) = obfs2::initiate(rng, TAG_PADDED_INTERMEDIATE, dc, None);
        let session = Session {
            user,
            mode,
            client_to_dc: ClientToDc::new(deframer, client.recv, dc_leg.send),
            dc_to_client: DcToClient::new(mode == Mode::FakeTls, dc_leg.recv, client.send),
        };
        Some((session, frame))
    }
}
