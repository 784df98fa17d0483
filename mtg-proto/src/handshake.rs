//! The server side of a client handshake as a chain of owned steps.
//!
//! The caller keeps every byte it has read from the client in one buffer and hands the whole
//! buffer to `handle_input` after each read (the buffer only grows). Each stage is a value that
//! a call consumes; the answer owns the next stage, so calling a stage in the wrong order does
//! not compile:
//!
//! ```text
//!  ServerHandshake ──handle_input──► NeedMore(ServerHandshake)    read more, call again
//!                                    Front { reason, host }         replay the buffer to the site
//!                                    Authenticated(Pending)         ee hello or dd frame verified
//!
//!  Pending ──refuse()─────────► FrontTarget { host }     front exactly like a wrong secret
//!          ──accept(rng, out)─► AwaitingFrame            write `out` (the ee server flight; empty for dd)
//!
//!  AwaitingFrame ──handle_input──► NeedMore(AwaitingFrame)   read more, call again
//!                                  Reject(reason)            close
//!                                  Ready(Established)        `consumed()` bytes were handshake
//!
//!  Established ──into_session(dc, rng)──► (Session, frame for the DC)
//!              ──into_fast_session(dc, rng)─► (Session<FastDcToClient>, frame for the DC)
//!              ──into_client_leg()────► ClientLeg (middle-proxy mode: no DC leg)
//! ```
//!
//! Both wrappers authenticate once: an `ee` client by its ClientHello (the obfuscated2 frame
//! then still has to arrive inside TLS records), a `dd` client by its obfuscated2 frame (so its
//! [`AwaitingFrame`] is ready at the first call). Between `Authenticated` and `accept` the app
//! applies its own rules (limits, throttle); `refuse` hands back where to front the client and
//! nothing was sent to it.

use core::fmt;
use core::time::Duration;

use hmac::Hmac;
use rand_core::RngCore;
use sha2::Sha256;
use zeroize::Zeroize;

use crate::doppel::flight_shape::FlightProfile;
use crate::obfs2::{self, FRAME_LEN, FrameHeader, ResponderLeg, TAG_PADDED_INTERMEDIATE};
use crate::relay::{ClientIn, ClientLeg, ClientOut, ClientToDc, DcToClient, FastDcToClient, Mode, Session};
use crate::replay::ReplayCache;
use crate::secret::KEY_LEN;
use crate::tls::client_hello::{ClientHello, HelloError, HelloRecords};
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
    /// Length range of the fake certificate record in the server flight before a flight
    /// shape is learned.
    pub app_data_len: AppDataLen,
    /// The fronting site's learned flight shapes (empty: today's fixed layout).
    pub flight: FlightProfile,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        Self {
            time_skew: Duration::from_secs(3),
            secured: false,
            app_data_len: AppDataLen::default(),
            flight: FlightProfile::default(),
        }
    }
}

/// What the hello stage needs from the outside world for one call.
pub struct HandshakeContext<'a> {
    /// The users to match against (the same table for every call of one handshake).
    pub users: &'a UserTable,
    /// The anti-replay cache.
    pub replay: &'a mut dyn ReplayCache,
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

/// Why an accepted `ee` client is closed while its obfuscated2 frame is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// A record after the hello was malformed.
    BadRecord(RecordError),
    /// The obfuscated2 tag is not padded intermediate (`dd dd dd dd`).
    BadTransportTag,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRecord(e) => write!(f, "bad record: {e}"),
            Self::BadTransportTag => f.write_str(
                "obfuscated2 tag names no transport (abridged, intermediate, padded intermediate)",
            ),
        }
    }
}

/// Where to front a refused client: what a wrong secret with the same bytes would get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontTarget {
    /// The configured host the SNI named (`ee`), or `None` (`dd`): the fronting target by default.
    pub host: Option<HostId>,
}

/// The answer of [`ServerHandshake::handle_input`].
#[derive(Debug)]
#[must_use = "a step owns the rest of the handshake"]
#[expect(
    clippy::large_enum_variant,
    reason = "a handshake lives on the stack for one connection's first second; boxing would allocate per valid client"
)]
pub enum HelloStep {
    /// Read more bytes and call again on the handshake handed back.
    NeedMore(ServerHandshake),
    /// Not a client: hand the connection to the fronting site with every byte read so far.
    Front {
        /// Why.
        reason: FrontReason,
        /// The configured host the SNI named, if any (the fronting target by default).
        host: Option<HostId>,
    },
    /// A user's key verified the `ee` hello or the `dd` frame: the app accepts or refuses it.
    Authenticated(Pending),
}

/// One client's handshake before it is authenticated. Cheap to create; holds no buffer.
#[derive(Debug)]
pub struct ServerHandshake {
    config: HandshakeConfig,
}

/// What the hello stage found in the bytes so far (internal form of [`HelloStep`]).
#[expect(clippy::large_enum_variant, reason = "moved once into a `HelloStep`, which is as large")]
enum Found {
    NeedMore,
    Front(FrontReason, Option<HostId>),
    Authenticated(Pending),
}

impl ServerHandshake {
    /// A handshake waiting for the first byte.
    pub fn new(config: HandshakeConfig) -> Self {
        Self { config }
    }

    /// Feeds all bytes read so far (`received` only ever grows). Allocates nothing and writes
    /// nothing: a probe costs a parse and, at most, one HMAC per user of the SNI's hosts.
    pub fn handle_input(self, received: &[u8], ctx: &mut HandshakeContext<'_>) -> HelloStep {
        match self.find(received, ctx) {
            Found::NeedMore => HelloStep::NeedMore(self),
            Found::Front(reason, host) => HelloStep::Front { reason, host },
            Found::Authenticated(pending) => HelloStep::Authenticated(pending),
        }
    }

    fn find(&self, received: &[u8], ctx: &mut HandshakeContext<'_>) -> Found {
        if received.is_empty() {
            return Found::NeedMore;
        }
        if !self.config.secured || ctx.users.secured_users().is_empty() {
            return self.tls_hello(received, ctx);
        }
        // A dd frame is random: it may even begin with 0x16. TLS is taken only for a
        // `16 03 01` start; a would-be hello that fails is tried as a frame before fronting.
        const TLS_START: [u8; 3] = [TYPE_HANDSHAKE, 0x03, 0x01];
        let n = received.len().min(TLS_START.len());
        if received[..n] != TLS_START[..n] {
            return secured_frame(received, ctx);
        }
        if n < TLS_START.len() {
            return Found::NeedMore;
        }
        let tls = self.tls_hello(received, ctx);
        if let Found::Front(FrontReason::BadHello(_), _) = tls {
            // Decide only on a whole frame, so the answer does not depend on how the bytes
            // arrive (found by the `faketls` fuzz target).
            if received.len() < FRAME_LEN {
                return Found::NeedMore;
            }
            if let secured @ Found::Authenticated(_) = secured_frame(received, ctx) {
                return secured;
            }
        }
        tls
    }

    fn tls_hello(&self, received: &[u8], ctx: &mut HandshakeContext<'_>) -> Found {
        let records = match HelloRecords::scan(received) {
            Ok(Some(records)) => records,
            Ok(None) => return Found::NeedMore,
            Err(e) => return Found::Front(FrontReason::BadHello(e), None),
        };
        let users = ctx.users;
        let hello = match records.parse(|name| users.host_id(name).map(|h| h.0)) {
            Ok(hello) => hello,
            Err(e) => return Found::Front(FrontReason::BadHello(e), None),
        };
        let Some(&first_host) = hello.hosts().first() else {
            return Found::Front(FrontReason::UnknownSni, None);
        };
        let host = Some(HostId(first_host));
        let tolerance = self.config.time_skew;
        let user = match users.match_hello(&records, &hello, ctx.now, tolerance, ctx.hint, ctx.full_search) {
            MatchOutcome::Matched(user) => user,
            MatchOutcome::Skipped => return Found::Front(FrontReason::SearchSkipped, host),
            MatchOutcome::TimeSkew => return Found::Front(FrontReason::TimeSkew, host),
            MatchOutcome::NoMatch => return Found::Front(FrontReason::BadDigest, host),
        };
        if ctx.replay.check_and_insert(hello.session_id()) {
            return Found::Front(FrontReason::Replay, host);
        }
        let (Some(mac), Some(key)) = (users.mac(user), users.key(user)) else {
            return Found::Front(FrontReason::BadDigest, host);
        };
        Found::Authenticated(Pending {
            user,
            wrapper: PendingWrapper::FakeTls(FakeTlsPending {
                mac: mac.clone(),
                key: ClientKey(*key),
                scanned: records.consumed(),
                app_data_len: self.config.app_data_len,
                flight: self.config.flight,
                hello,
            }),
        })
    }
}

/// A `dd` client: the first 64 bytes are its obfuscated2 frame, keyed with its secret.
fn secured_frame(received: &[u8], ctx: &mut HandshakeContext<'_>) -> Found {
    // A real client never starts a frame with these; refuse probes without waiting.
    let mut head = [0u8; FRAME_LEN];
    let n = received.len().min(FRAME_LEN);
    head[..n].copy_from_slice(&received[..n]);
    if (n >= 1 && head[0] == 0xef)
        || (n >= 4
            && obfs2::FORBIDDEN_PREFIXES.contains(&u32::from_le_bytes([head[0], head[1], head[2], head[3]])))
        || (n >= 8 && head[4..8] == [0, 0, 0, 0])
    {
        return Found::Front(FrontReason::NoSecuredMatch, None);
    }
    if n < FRAME_LEN {
        return Found::NeedMore;
    }
    for &user in ctx.users.secured_users() {
        let Some(key) = ctx.users.key(user) else {
            continue;
        };
        let (header, client) = obfs2::respond_keyed(&head, Some(key));
        if header.tag != TAG_PADDED_INTERMEDIATE {
            continue;
        }
        if ctx.replay.check_and_insert(&head[8..56]) {
            return Found::Front(FrontReason::Replay, None);
        }
        return Found::Authenticated(Pending {
            user,
            wrapper: PendingWrapper::Secured { client, dc: header },
        });
    }
    Found::Front(FrontReason::NoSecuredMatch, None)
}

/// A user's key, kept only until the `ee` frame is read; zeroized on drop.
struct ClientKey([u8; KEY_LEN]);

impl Drop for ClientKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// What an authenticated `ee` client needs to get its server flight and have its frame read.
struct FakeTlsPending {
    mac: Hmac<Sha256>,
    key: ClientKey,
    /// Bytes of the buffer that were the hello.
    scanned: usize,
    app_data_len: AppDataLen,
    flight: FlightProfile,
    hello: ClientHello,
}

enum PendingWrapper {
    FakeTls(FakeTlsPending),
    Secured { client: ResponderLeg, dc: FrameHeader },
}

/// An authenticated client waiting for the app's decision: [`Pending::accept`] or
/// [`Pending::refuse`]. Nothing has been sent to the client yet.
pub struct Pending {
    user: UserId,
    wrapper: PendingWrapper,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("user", &self.user)
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// The authenticated user.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// The wrapper the client used.
    pub fn mode(&self) -> Mode {
        match self.wrapper {
            PendingWrapper::FakeTls(_) => Mode::FakeTls,
            PendingWrapper::Secured { .. } => Mode::Secured,
        }
    }

    /// Admits the client. For `ee`, appends the signed server flight to `out` (write it before
    /// anything else); for `dd`, `out` is left as it is. The handshake goes on with the
    /// obfuscated2 frame: feed the same buffer to [`AwaitingFrame::handle_input`] before
    /// reading more.
    #[must_use = "the handshake goes on with the frame"]
    pub fn accept(self, rng: &mut (impl RngCore + ?Sized), out: &mut Vec<u8>) -> AwaitingFrame {
        let state = match self.wrapper {
            PendingWrapper::FakeTls(tls) => {
                let FakeTlsPending { mac, key, scanned, app_data_len, flight, hello } = tls;
                server_hello::write_flight(out, &mac, &hello, &flight, app_data_len, rng);
                FrameState::Tls { key, deframer: Deframer::new(), scanned, frame: [0; FRAME_LEN], have: 0 }
            }
            PendingWrapper::Secured { client, dc } => FrameState::Secured { client, dc },
        };
        AwaitingFrame { user: self.user, state }
    }

    /// Refuses the client: nothing is sent; the app fronts it with every byte read so far, to
    /// the target a wrong secret would have got.
    #[must_use = "the refused client is fronted to this target"]
    pub fn refuse(self) -> FrontTarget {
        match self.wrapper {
            PendingWrapper::FakeTls(tls) => {
                FrontTarget { host: tls.hello.hosts().first().map(|&h| HostId(h)) }
            }
            PendingWrapper::Secured { .. } => FrontTarget { host: None },
        }
    }
}

#[expect(
    clippy::large_enum_variant,
    reason = "lives on the stack for one connection's first second; boxing would allocate per valid client"
)]
enum FrameState {
    /// `ee`: the frame arrives in ApplicationData records after the hello.
    Tls { key: ClientKey, deframer: Deframer, scanned: usize, frame: [u8; FRAME_LEN], have: usize },
    /// `dd`: the frame was the authentication.
    Secured { client: ResponderLeg, dc: FrameHeader },
}

/// An accepted client whose obfuscated2 frame is read next.
pub struct AwaitingFrame {
    user: UserId,
    state: FrameState,
}

impl fmt::Debug for AwaitingFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.state {
            FrameState::Tls { .. } => Mode::FakeTls,
            FrameState::Secured { .. } => Mode::Secured,
        };
        f.debug_struct("AwaitingFrame").field("user", &self.user).field("mode", &mode).finish_non_exhaustive()
    }
}

/// The answer of [`AwaitingFrame::handle_input`].
#[derive(Debug)]
#[must_use = "a step owns the rest of the handshake"]
pub enum FrameStep {
    /// Read more bytes and call again on the stage handed back.
    NeedMore(AwaitingFrame),
    /// Close the connection.
    Reject(RejectReason),
    /// The client is authenticated and its frame read: open the session.
    Ready(Established),
}

impl AwaitingFrame {
    /// The accepted user.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// Feeds all bytes read so far (the same buffer the hello stage saw, grown). A `dd`
    /// client is ready at once.
    pub fn handle_input(self, received: &[u8]) -> FrameStep {
        let user = self.user;
        let (key, mut deframer, mut scanned, mut frame, mut have) = match self.state {
            FrameState::Secured { client, dc } => {
                return FrameStep::Ready(Established {
                    user,
                    mode: Mode::Secured,
                    dc,
                    consumed: FRAME_LEN,
                    client,
                    deframer: None,
                });
            }
            FrameState::Tls { key, deframer, scanned, frame, have } => (key, deframer, scanned, frame, have),
        };
        while have < FRAME_LEN && scanned < received.len() {
            let step = match deframer.step(&received[scanned..], FRAME_LEN - have) {
                Ok(step) => step,
                Err(e) => return FrameStep::Reject(RejectReason::BadRecord(e)),
            };
            if let Some(range) = step.payload {
                let src = &received[scanned + range.start..scanned + range.end];
                frame[have..have + src.len()].copy_from_slice(src);
                have += src.len();
            }
            scanned += step.consumed;
        }
        if have < FRAME_LEN {
            let state = FrameState::Tls { key, deframer, scanned, frame, have };
            return FrameStep::NeedMore(Self { user, state });
        }
        let (header, client) = obfs2::respond_keyed(&frame, Some(&key.0));
        // Inside FakeTLS (already signed with the secret) any of the three transports: every
        // Telegram app sends padded intermediate, other clients may not. Bare `dd` frames
        // must be padded intermediate: that is what the `dd` prefix asks for, and the tag is
        // all that tells a `dd` user's frame from a stranger's.
        if crate::middle::Transport::from_tag(header.tag).is_none() {
            return FrameStep::Reject(RejectReason::BadTransportTag);
        }
        FrameStep::Ready(Established {
            user,
            mode: Mode::FakeTls,
            dc: header,
            consumed: scanned,
            client,
            deframer: Some(deframer),
        })
    }
}

/// A client with its obfuscated2 frame read: the end of the handshake.
pub struct Established {
    user: UserId,
    mode: Mode,
    dc: FrameHeader,
    consumed: usize,
    client: ResponderLeg,
    deframer: Option<Deframer>,
}

impl fmt::Debug for Established {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Established")
            .field("user", &self.user)
            .field("mode", &self.mode)
            .field("dc", &self.dc)
            .field("consumed", &self.consumed)
            .finish_non_exhaustive()
    }
}

impl Established {
    /// The authenticated user.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// FakeTLS or secured.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The DC the client asked for (and its transport tag).
    pub fn dc(&self) -> FrameHeader {
        self.dc
    }

    /// Bytes of the buffer that were the handshake; the rest is relay input.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// Opens the DC leg for `dc` (normally the client's DC, or the fallback the app chose) and
    /// returns the relay session and the 64-byte frame to send to the DC first. The DC leg
    /// carries the client's transport tag: the relay passes the client's packets through as
    /// they are, so the DC must parse the same transport.
    pub fn into_session(self, dc: i16, rng: &mut (impl RngCore + ?Sized)) -> (Session, [u8; FRAME_LEN]) {
        let (frame, dc_leg) = obfs2::initiate(rng, self.dc.tag, dc, None);
        let client = self.client.cipher;
        let session = Session {
            user: self.user,
            mode: self.mode,
            client_to_dc: ClientToDc::new(self.deframer, client.recv, dc_leg.send),
            dc_to_client: DcToClient::new(self.mode == Mode::FakeTls, dc_leg.recv, client.send),
        };
        (session, frame)
    }

    /// Like [`Self::into_session`], in fast mode: the DC frame makes the DC answer with the
    /// client leg's own proxy→client keystream (key, IV and position 0), so the DC→client
    /// half only frames the DC's bytes ([`FastDcToClient`]); client→DC still decrypts and
    /// re-encrypts with the DC leg's own key.
    ///
    /// The price: the download bytes are identical on both legs (an observer of both can link
    /// them), and the DC frame, which carries its key material in the clear like every DC
    /// frame, now carries the client leg's download key.
    pub fn into_fast_session(
        self,
        dc: i16,
        rng: &mut (impl RngCore + ?Sized),
    ) -> (Session<FastDcToClient>, [u8; FRAME_LEN]) {
        let ResponderLeg { cipher: client, send_key } = self.client;
        let (frame, dc_leg) = obfs2::initiate_fast(rng, self.dc.tag, dc, &send_key);
        let session = Session {
            user: self.user,
            mode: self.mode,
            client_to_dc: ClientToDc::new(self.deframer, client.recv, dc_leg.send),
            dc_to_client: FastDcToClient::new(self.mode == Mode::FakeTls),
        };
        (session, frame)
    }

    /// Keeps only the client's leg, for middle-proxy mode (the app splits the plaintext into
    /// transport packets itself); `None` when the frame's tag names no known transport
    /// (the handshake accepts none such, so this does not happen for an accepted client).
    pub fn into_client_leg(self) -> Option<ClientLeg> {
        let transport = crate::middle::Transport::from_tag(self.dc.tag)?;
        Some(ClientLeg {
            user: self.user,
            mode: self.mode,
            transport,
            dc: self.dc.dc,
            client_in: ClientIn::new(self.deframer, self.client.cipher.recv),
            client_out: ClientOut::new(self.mode == Mode::FakeTls, self.client.cipher.send),
        })
    }
}
