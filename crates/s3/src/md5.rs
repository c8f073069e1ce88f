//! MD5, the ETag S3 clients expect, for many request bodies at once.
//!
//! MD5 is a chain of dependent steps: one body hashes at about 550 MiB/s on
//! a core, whatever the CPU. With 16 large PUTs in flight it was a quarter
//! of the endpoint's CPU. With AVX-512, one instruction stream advances 16
//! bodies by a block each in little more than one body's block (the chain
//! of steps is as long; the lanes ride along): [`Lanes`] is a thread that
//! takes the chunks of every large body as they arrive and hashes them
//! side by side, as many at once as have bytes waiting. A body is hashed
//! in its request ([`Md5`]) until it outgrows `HAND_OVER`, so a small PUT
//! never waits on another thread.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// floor(|sin(i + 1)| * 2^32), the per-step constants of RFC 1321.
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501, 0x698098d8, 0x8b44f7af,
    0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa,
    0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8,
    0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244, 0x432aff97,
    0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
    0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// The 64 steps of one block, as (step function, message word, rotation) in
/// RFC 1321's order; `$step` is invoked with the rotated register names.
/// Step functions: 0 F = b ? c : d, 1 G = d ? b : c, 2 H = b ^ c ^ d,
/// 3 I = c ^ (b | !d).
macro_rules! md5_steps {
    ($step:ident, $a:ident, $b:ident, $c:ident, $d:ident) => {
        md5_steps!(@four $step, $a, $b, $c, $d, 0, 0, [0, 1, 2, 3], [7, 12, 17, 22]);
        md5_steps!(@four $step, $a, $b, $c, $d, 0, 4, [4, 5, 6, 7], [7, 12, 17, 22]);
        md5_steps!(@four $step, $a, $b, $c, $d, 0, 8, [8, 9, 10, 11], [7, 12, 17, 22]);
        md5_steps!(@four $step, $a, $b, $c, $d, 0, 12, [12, 13, 14, 15], [7, 12, 17, 22]);
        md5_steps!(@four $step, $a, $b, $c, $d, 1, 16, [1, 6, 11, 0], [5, 9, 14, 20]);
        md5_steps!(@four $step, $a, $b, $c, $d, 1, 20, [5, 10, 15, 4], [5, 9, 14, 20]);
        md5_steps!(@four $step, $a, $b, $c, $d, 1, 24, [9, 14, 3, 8], [5, 9, 14, 20]);
        md5_steps!(@four $step, $a, $b, $c, $d, 1, 28, [13, 2, 7, 12], [5, 9, 14, 20]);
        md5_steps!(@four $step, $a, $b, $c, $d, 2, 32, [5, 8, 11, 14], [4, 11, 16, 23]);
        md5_steps!(@four $step, $a, $b, $c, $d, 2, 36, [1, 4, 7, 10], [4, 11, 16, 23]);
        md5_steps!(@four $step, $a, $b, $c, $d, 2, 40, [13, 0, 3, 6], [4, 11, 16, 23]);
        md5_steps!(@four $step, $a, $b, $c, $d, 2, 44, [9, 12, 15, 2], [4, 11, 16, 23]);
        md5_steps!(@four $step, $a, $b, $c, $d, 3, 48, [0, 7, 14, 5], [6, 10, 15, 21]);
        md5_steps!(@four $step, $a, $b, $c, $d, 3, 52, [12, 3, 10, 1], [6, 10, 15, 21]);
        md5_steps!(@four $step, $a, $b, $c, $d, 3, 56, [8, 15, 6, 13], [6, 10, 15, 21]);
        md5_steps!(@four $step, $a, $b, $c, $d, 3, 60, [4, 11, 2, 9], [6, 10, 15, 21]);
    };
    (@four $step:ident, $a:ident, $b:ident, $c:ident, $d:ident, $f:tt, $i:expr, [$g0:tt, $g1:tt, $g2:tt, $g3:tt], [$s0:tt, $s1:tt, $s2:tt, $s3:tt]) => {
        $step!($f, $a, $b, $c, $d, $i, $g0, $s0);
        $step!($f, $d, $a, $b, $c, $i + 1, $g1, $s1);
        $step!($f, $c, $d, $a, $b, $i + 2, $g2, $s2);
        $step!($f, $b, $c, $d, $a, $i + 3, $g3, $s3);
    };
}

/// Advances `state` by one 64-byte block.
fn compress(state: &mut [u32; 4], block: &[u8; 64]) {
    let mut m = [0u32; 16];
    for (w, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    macro_rules! scalar_step {
        ($f:tt, $a:ident, $b:ident, $c:ident, $d:ident, $i:expr, $g:tt, $s:tt) => {
            let f = match $f {
                0 => ($b & $c) | (!$b & $d),
                1 => ($d & $b) | (!$d & $c),
                2 => $b ^ $c ^ $d,
                _ => $c ^ ($b | !$d),
            };
            $a = $b.wrapping_add($a.wrapping_add(f).wrapping_add(K[$i]).wrapping_add(m[$g]).rotate_left($s));
        };
    }
    md5_steps!(scalar_step, a, b, c, d);
    for (s, v) in state.iter_mut().zip([a, b, c, d]) {
        *s = s.wrapping_add(v);
    }
}

/// One body's MD5 as it streams by.
#[derive(Clone)]
pub struct Md5 {
    state: [u32; 4],
    /// Bytes seen so far.
    len: u64,
    /// The start of a block not yet whole (`carried` bytes of it).
    carry: [u8; 64],
    carried: usize,
}

impl Default for Md5 {
    fn default() -> Md5 {
        Md5::new()
    }
}

impl Md5 {
    pub fn new() -> Md5 {
        Md5 { state: INIT, len: 0, carry: [0; 64], carried: 0 }
    }

    pub fn digest(data: &[u8]) -> [u8; 16] {
        let mut h = Md5::new();
        h.update(data);
        h.finalize()
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.carried > 0 {
            let take = (64 - self.carried).min(data.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&data[..take]);
            self.carried += take;
            data = &data[take..];
            if self.carried < 64 {
                return;
            }
            compress(&mut self.state, &self.carry);
            self.carried = 0;
        }
        let mut blocks = data.chunks_exact(64);
        for block in &mut blocks {
            compress(&mut self.state, block.try_into().expect("64-byte chunk"));
        }
        let rest = blocks.remainder();
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carried = rest.len();
    }

    pub fn finalize(mut self) -> [u8; 16] {
        let bits = self.len.wrapping_mul(8);
        let pad = if self.carried < 56 { 56 - self.carried } else { 120 - self.carried };
        let mut tail = [0u8; 72];
        tail[0] = 0x80;
        tail[pad..pad + 8].copy_from_slice(&bits.to_le_bytes());
        self.update(&tail[..pad + 8]);
        debug_assert_eq!(self.carried, 0);
        let mut out = [0u8; 16];
        for (o, s) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&s.to_le_bytes());
        }
        out
    }
}

/// Bodies larger than this leave their request for [`Lanes`].
pub const HAND_OVER: u64 = 64 << 10;
/// Fewer bodies than this with a block to hash are hashed one at a time:
/// the 16-lane step costs about 1.2 single-body steps.
const MIN_LANES: usize = 2;
/// Most lanes a step must fill while its bodies are still arriving (fewer
/// when fewer bodies arrive); short of them, their bytes wait for more
/// bodies' bytes, or fill the lanes of a body that has ended.
const FULL_LANES: usize = 8;
/// Queued bytes that wake the thread (sooner: a body that ends or is dropped).
const WAKE_BYTES: usize = 256 << 10;
/// Most bytes queued for the thread; a request waits for room beyond it.
const ROOM_BYTES: usize = 32 << 20;

/// The thread that hashes large bodies side by side. Dropping it ends the
/// thread once it has answered every body that had ended.
pub struct Lanes {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    inbox: Mutex<Inbox>,
    /// `Inbox::wake_now` became true.
    ready: Condvar,
    /// One permit per byte queued or taken and not yet hashed.
    room: tokio::sync::Semaphore,
    /// 16-lane steps run so far.
    side_by_side: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Inbox {
    next_id: u64,
    bodies: HashMap<u64, Entry>,
    queued: usize,
    /// Bodies ended or dropped, not yet taken by the thread.
    urgent: usize,
    closed: bool,
}

impl Inbox {
    fn wake_now(&self) -> bool {
        self.closed || self.urgent > 0 || self.queued >= WAKE_BYTES
    }
}

#[derive(Default)]
struct Entry {
    /// The body's hash so far, handed over from its request; the thread
    /// keeps it from its first take on.
    start: Option<Md5>,
    chunks: Vec<Bytes>,
    bytes: usize,
    finish: Option<tokio::sync::oneshot::Sender<[u8; 16]>>,
    dropped: bool,
}

impl Lanes {
    /// The thread, where the CPU has AVX-512 (`None` elsewhere: each body is
    /// then hashed in its own request).
    pub fn start() -> Option<Lanes> {
        kernel16().map(|k| Lanes::with_kernel(Some(k)))
    }

    /// `kernel`: the 16-lane step, or `None` to hash one body at a time.
    fn with_kernel(kernel: Option<Kernel16>) -> Lanes {
        let shared = Arc::new(Shared { inbox: Mutex::default(), ready: Condvar::new(), room: tokio::sync::Semaphore::new(ROOM_BYTES), side_by_side: Default::default() });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("s3-md5".into())
            .spawn(move || run(&worker, kernel))
            .expect("spawn the MD5 thread");
        Lanes { shared, thread: Some(thread) }
    }

    /// Continues `hash` (a body's MD5 so far) on the thread.
    pub fn hand_over(&self, hash: Md5) -> LaneBody {
        let mut inbox = self.shared.inbox.lock().expect("md5 inbox");
        let id = inbox.next_id;
        inbox.next_id += 1;
        inbox.bodies.insert(id, Entry { start: Some(hash), ..Default::default() });
        LaneBody { shared: self.shared.clone(), id, ended: false }
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.shared.inbox.lock().expect("md5 inbox").closed = true;
        self.shared.ready.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A body being hashed by [`Lanes`]. Dropped before `finish`, it is
/// forgotten.
pub struct LaneBody {
    shared: Arc<Shared>,
    id: u64,
    ended: bool,
}

impl LaneBody {
    /// Queues the body's next chunk, waiting while the thread has
    /// `ROOM_BYTES` queued.
    pub async fn update(&mut self, mut chunk: Bytes) {
        while !chunk.is_empty() {
            let part = chunk.split_to(chunk.len().min(ROOM_BYTES));
            // Each queued byte holds a permit (none once the thread has ended).
            if let Ok(p) = self.shared.room.acquire_many(part.len() as u32).await {
                p.forget();
            }
            let mut inbox = self.shared.inbox.lock().expect("md5 inbox");
            if inbox.closed {
                return;
            }
            let was = inbox.wake_now();
            inbox.queued += part.len();
            let entry = inbox.bodies.entry(self.id).or_default();
            entry.bytes += part.len();
            entry.chunks.push(part);
            if !was && inbox.wake_now() {
                self.shared.ready.notify_one();
            }
        }
    }

    /// The body's MD5; `None` if the thread has stopped.
    pub async fn finish(mut self) -> Option<[u8; 16]> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ended = true;
        // Once closed, the thread takes nothing more: the answer is `None`
        // (the sender is dropped here) instead of a wait for ever.
        self.mark(|e| e.finish = Some(tx));
        rx.await.ok()
    }

    /// Sets `set` on the body's entry for the thread's next take, unless the
    /// thread is closing.
    fn mark(&self, set: impl FnOnce(&mut Entry)) {
        let mut inbox = self.shared.inbox.lock().expect("md5 inbox");
        if inbox.closed {
            return;
        }
        set(inbox.bodies.entry(self.id).or_default());
        inbox.urgent += 1;
        self.shared.ready.notify_one();
    }
}

impl Drop for LaneBody {
    fn drop(&mut self) {
        if !self.ended {
            self.mark(|e| e.dropped = true);
        }
    }
}

/// A body on the thread: its hash so far and the chunks taken from the
/// inbox that are not hashed yet.
#[derive(Default)]
struct Job {
    hash: Md5,
    chunks: VecDeque<Bytes>,
    /// Offset into the front chunk.
    at: usize,
    /// Bytes in `chunks` from `at` on.
    left: usize,
    finish: Option<tokio::sync::oneshot::Sender<[u8; 16]>>,
}

impl Job {
    fn take(&mut self, chunks: Vec<Bytes>, bytes: usize) {
        self.hash.len += bytes as u64;
        self.left += bytes;
        self.chunks.extend(chunks);
    }

    /// Whole blocks in `hash.carry` and `chunks` together.
    fn blocks(&self) -> usize {
        (self.hash.carried + self.left) / 64
    }

    /// Copies the next whole block into `out` (`blocks` must be above 0).
    fn next_block(&mut self, out: &mut [u8; 64]) {
        let mut filled = self.hash.carried;
        out[..filled].copy_from_slice(&self.hash.carry[..filled]);
        self.hash.carried = 0;
        while filled < 64 {
            let front = self.chunks.front().expect("a whole block is queued");
            let take = (64 - filled).min(front.len() - self.at);
            out[filled..filled + take].copy_from_slice(&front[self.at..self.at + take]);
            filled += take;
            self.at += take;
            self.left -= take;
            if self.at == front.len() {
                self.chunks.pop_front();
                self.at = 0;
            }
        }
    }

    /// Hashes what is left, one block at a time straight from the chunks
    /// (`Md5::update`), and carries the rest.
    fn catch_up(&mut self) {
        // `take` counted these bytes already.
        let len = self.hash.len;
        for chunk in self.chunks.drain(..) {
            self.hash.update(&chunk[self.at..]);
            self.at = 0;
        }
        self.hash.len = len;
        self.left = 0;
    }
}

fn run(shared: &Shared, kernel: Option<Kernel16>) {
    // However the thread ends (a panic included), requests stop waiting for
    // room it would never free: their chunks queue unhashed and `finish`
    // answers `None`.
    struct CloseRoom<'a>(&'a tokio::sync::Semaphore);
    impl Drop for CloseRoom<'_> {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _close = CloseRoom(&shared.room);
    // Bodies the thread has taken chunks of and not yet answered. Their
    // unhashed bytes keep their room in the semaphore until hashed.
    let mut jobs: HashMap<u64, Job> = HashMap::new();
    loop {
        let (in_flight, closed, freed) = {
            let mut inbox = shared.inbox.lock().expect("md5 inbox");
            while !inbox.wake_now() {
                inbox = shared.ready.wait(inbox).expect("md5 inbox");
            }
            let mut freed = 0;
            let mut gone = Vec::new();
            for (&id, e) in inbox.bodies.iter_mut() {
                if e.start.is_none() && e.chunks.is_empty() && e.finish.is_none() && !e.dropped {
                    continue;
                }
                let job = jobs.entry(id).or_default();
                if let Some(start) = e.start.take() {
                    job.hash = start;
                }
                job.take(std::mem::take(&mut e.chunks), std::mem::take(&mut e.bytes));
                if e.dropped {
                    freed += jobs.remove(&id).map_or(0, |j| j.left);
                    gone.push(id);
                } else if let Some(tx) = e.finish.take() {
                    job.finish = Some(tx);
                    gone.push(id);
                }
            }
            for id in gone {
                inbox.bodies.remove(&id);
            }
            inbox.queued = 0;
            inbox.urgent = 0;
            (inbox.bodies.len(), inbox.closed, freed)
        };
        let before: usize = jobs.values().map(|j| j.left).sum();
        // Bodies still arriving share well-filled steps only: as many lanes
        // as bodies arrive, up to `FULL_LANES`.
        let fill = in_flight.clamp(MIN_LANES, FULL_LANES);
        let mut steps = side_by_side(jobs.values_mut().filter(|j| j.blocks() > 0).collect(), kernel, fill, 0);
        // What they leave waits for other bodies' next chunks, unless its
        // body has ended, too few bodies are arriving to share lanes, or the
        // room would stay less than half free: such a body is due now, and
        // the lanes it leaves free take the others' bytes.
        let hashed = before - jobs.values().map(|j| j.left).sum::<usize>();
        let crowded = shared.room.available_permits() + hashed < ROOM_BYTES / 2;
        let all_due = in_flight < MIN_LANES || crowded || closed;
        let (mut due, rest): (Vec<&mut Job>, Vec<&mut Job>) =
            jobs.values_mut().filter(|j| j.blocks() > 0).partition(|j| all_due || j.finish.is_some());
        let due_count = due.len();
        if due_count > 0 {
            due.extend(rest);
            steps += side_by_side(due, kernel, MIN_LANES, due_count);
        }
        shared.side_by_side.fetch_add(steps, std::sync::atomic::Ordering::Relaxed);
        jobs.retain(|_, job| {
            if job.finish.is_none() && !all_due {
                return true;
            }
            job.catch_up();
            match job.finish.take() {
                Some(tx) => {
                    let _ = tx.send(std::mem::take(&mut job.hash).finalize());
                    false
                }
                None => true,
            }
        });
        shared.room.add_permits(freed + before - jobs.values().map(|j| j.left).sum::<usize>());
        if closed {
            return;
        }
    }
}

/// Hashes `jobs` 16 at a time, in their order, while at least `min_lanes`
/// of them have a whole block left and, when `due` is above 0, one of the
/// first `due` jobs still has; returns the 16-lane steps taken.
fn side_by_side(mut jobs: Vec<&mut Job>, kernel: Option<Kernel16>, min_lanes: usize, due: usize) -> u64 {
    let Some(kernel) = kernel else { return 0 };
    let mut steps = 0;
    let mut waiting: VecDeque<usize> = (0..jobs.len()).collect();
    let mut lanes: [Option<usize>; 16] = [None; 16];
    let mut states = [[0u32; 16]; 4];
    let mut blocks = [[0u8; 64]; 16];
    loop {
        for (lane, slot) in lanes.iter_mut().enumerate() {
            if slot.is_none()
                && let Some(i) = waiting.pop_front()
            {
                *slot = Some(i);
                for (row, word) in states.iter_mut().zip(jobs[i].hash.state) {
                    row[lane] = word;
                }
            }
        }
        let due_left = lanes.iter().flatten().any(|&i| i < due) || waiting.front().is_some_and(|&i| i < due);
        if lanes.iter().flatten().count() < min_lanes.max(1) || (due > 0 && !due_left) {
            break;
        }
        let mut mask = 0u16;
        for (lane, slot) in lanes.iter().enumerate() {
            if let Some(i) = *slot {
                jobs[i].next_block(&mut blocks[lane]);
                mask |= 1 << lane;
            }
        }
        kernel(&mut states, &blocks, mask);
        steps += 1;
        for (lane, slot) in lanes.iter_mut().enumerate() {
            if let Some(i) = *slot
                && jobs[i].blocks() == 0
            {
                jobs[i].hash.state = states.map(|row| row[lane]);
                *slot = None;
            }
        }
    }
    for (lane, slot) in lanes.iter().enumerate() {
        if let Some(i) = *slot {
            jobs[i].hash.state = states.map(|row| row[lane]);
        }
    }
    steps
}

/// Advances lane `j`'s state (word `w` in `states[w][j]`) by `blocks[j]`
/// for each lane `j` set in the mask.
type Kernel16 = fn(&mut [[u32; 16]; 4], &[[u8; 64]; 16], u16);

fn kernel16() -> Option<Kernel16> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return Some(|states, blocks, mask| {
            // SAFETY: the CPU has AVX-512F, checked above.
            unsafe { avx512::compress16(states, blocks, mask) }
        });
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::K;
    use std::arch::x86_64::*;

    /// One block of each lane set in `mask`. A state register's words sit
    /// in one row (`states[w][j]`: word `w` of lane `j`), loaded and stored
    /// whole; the blocks, one lane's per vector as loaded, are transposed in
    /// registers (64 shuffles) so that vector `i` holds every lane's word
    /// `i`. Gathering the words instead cost twice the whole step.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn compress16(states: &mut [[u32; 16]; 4], blocks: &[[u8; 64]; 16], mask: u16) {
        // Row j: lane j's block.
        // SAFETY: each block is 64 bytes, one vector.
        let r: [__m512i; 16] = std::array::from_fn(|j| unsafe { _mm512_loadu_si512(blocks[j].as_ptr() as *const _) });
        // Pairs of lanes interleaved word by word, then two by two.
        let t: [__m512i; 16] = std::array::from_fn(|n| {
            let (a, b) = (r[n & !1], r[n | 1]);
            if n % 2 == 0 { _mm512_unpacklo_epi32(a, b) } else { _mm512_unpackhi_epi32(a, b) }
        });
        // u[4k + q], 128-bit chunk c: word 4c + q of lanes 4k..4k + 3.
        let u: [__m512i; 16] = std::array::from_fn(|n| {
            let (k, q) = (n / 4, n % 4);
            let (a, b) = (t[4 * k + (q >> 1)], t[4 * k + 2 + (q >> 1)]);
            if q % 2 == 0 { _mm512_unpacklo_epi64(a, b) } else { _mm512_unpackhi_epi64(a, b) }
        });
        let mut m = [_mm512_setzero_si512(); 16];
        for q in 0..4 {
            let v0 = _mm512_shuffle_i32x4::<0x88>(u[q], u[4 + q]);
            let v1 = _mm512_shuffle_i32x4::<0xdd>(u[q], u[4 + q]);
            let v2 = _mm512_shuffle_i32x4::<0x88>(u[8 + q], u[12 + q]);
            let v3 = _mm512_shuffle_i32x4::<0xdd>(u[8 + q], u[12 + q]);
            m[q] = _mm512_shuffle_i32x4::<0x88>(v0, v2);
            m[8 + q] = _mm512_shuffle_i32x4::<0xdd>(v0, v2);
            m[4 + q] = _mm512_shuffle_i32x4::<0x88>(v1, v3);
            m[12 + q] = _mm512_shuffle_i32x4::<0xdd>(v1, v3);
        }
        // SAFETY: each row is 16 words, one vector.
        let [a0, b0, c0, d0] = [0, 1, 2, 3].map(|w| unsafe { _mm512_loadu_si512(states[w].as_ptr() as *const _) });
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        macro_rules! lane_step {
            ($f:tt, $a:ident, $b:ident, $c:ident, $d:ident, $i:expr, $g:tt, $s:tt) => {
                // Truth tables of F, G, H, I over (b, c, d).
                let f = match $f {
                    0 => _mm512_ternarylogic_epi32::<0xca>($b, $c, $d),
                    1 => _mm512_ternarylogic_epi32::<0xe4>($b, $c, $d),
                    2 => _mm512_ternarylogic_epi32::<0x96>($b, $c, $d),
                    _ => _mm512_ternarylogic_epi32::<0x39>($b, $c, $d),
                };
                let t = _mm512_add_epi32(_mm512_add_epi32($a, f), _mm512_add_epi32(_mm512_set1_epi32(K[$i] as i32), m[$g]));
                $a = _mm512_add_epi32($b, _mm512_rol_epi32::<$s>(t));
            };
        }
        md5_steps!(lane_step, a, b, c, d);
        for (w, (v, v0)) in [(a, a0), (b, b0), (c, c0), (d, d0)].into_iter().enumerate() {
            // Lanes outside the mask keep their state.
            let sum = _mm512_mask_add_epi32(v0, mask, v, v0);
            // SAFETY: as for the loads above.
            unsafe { _mm512_storeu_si512(states[w].as_mut_ptr() as *mut _, sum) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::md5 as md5_ref;
    use md5_ref::Digest;

    fn reference(data: &[u8]) -> [u8; 16] {
        md5_ref::Md5::digest(data).into()
    }

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn matches_the_reference_at_every_length_around_a_block_and_in_any_pieces() {
        for len in (0..200).chain([1000, 4096, 65_537]) {
            let data = bytes(len, len as u64);
            assert_eq!(Md5::digest(&data), reference(&data), "length {len}");
            let mut h = Md5::new();
            for piece in data.chunks(1 + len % 13) {
                h.update(piece);
            }
            assert_eq!(h.finalize(), reference(&data), "length {len} in pieces");
        }
        assert_eq!(hex::encode(Md5::digest(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn the_16_lane_step_matches_one_lane_at_a_time_and_leaves_masked_lanes_alone() {
        let Some(kernel) = kernel16() else {
            eprintln!("no AVX-512 here: the 16-lane step is not used, nothing to compare");
            return;
        };
        let lanes: [[u32; 4]; 16] = std::array::from_fn(|j| bytes(16, j as u64).chunks_exact(4).map(|w| u32::from_le_bytes(w.try_into().unwrap())).collect::<Vec<_>>().try_into().unwrap());
        let mut states: [[u32; 16]; 4] = std::array::from_fn(|w| std::array::from_fn(|j| lanes[j][w]));
        let blocks: [[u8; 64]; 16] = std::array::from_fn(|j| bytes(64, 100 + j as u64).try_into().unwrap());
        let mask = 0b1011_0111_1110_1101u16;
        let mut expected = lanes;
        for j in 0..16 {
            if mask & (1 << j) != 0 {
                compress(&mut expected[j], &blocks[j]);
            }
        }
        kernel(&mut states, &blocks, mask);
        assert_eq!(states, std::array::from_fn(|w| std::array::from_fn(|j| expected[j][w])));
    }

    /// Bodies of every size, in chunks of every size, more of them than
    /// lanes, some dropped midway: each finished one has its reference MD5.
    async fn bodies_hash_side_by_side(kernel: Option<Kernel16>) {
        let lanes = Arc::new(Lanes::with_kernel(kernel));
        let tasks: Vec<_> = (0..40u64)
            .map(|n| {
                let lanes = lanes.clone();
                tokio::spawn(async move {
                    let data = bytes([0, 1, 63, 64, 65, 5000, 300_000, 1 << 20][n as usize % 8] + n as usize, n);
                    let mut head = Md5::new();
                    let split = (n as usize * 37) % (data.len() + 1);
                    head.update(&data[..split]);
                    let mut body = lanes.hand_over(head);
                    for chunk in data[split..].chunks(1 + (n as usize * 4099) % 70_000) {
                        body.update(Bytes::copy_from_slice(chunk)).await;
                        tokio::task::yield_now().await;
                    }
                    if n % 9 == 4 {
                        drop(body);
                        return None;
                    }
                    Some((body.finish().await.expect("thread running"), reference(&data), data.len()))
                })
            })
            .collect();
        let mut finished = 0;
        for t in tasks {
            if let Some((got, want, len)) = t.await.unwrap() {
                assert_eq!(got, want, "body of {len} bytes");
                finished += 1;
            }
        }
        assert_eq!(finished, 36);
        assert!(lanes.shared.inbox.lock().unwrap().bodies.is_empty(), "every body is answered or forgotten");
        let steps = lanes.shared.side_by_side.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(steps > 0, kernel.is_some(), "{steps} 16-lane steps");
    }

    #[test]
    fn a_due_body_is_hashed_to_its_end_with_the_others_filling_spare_lanes() {
        let Some(kernel) = kernel16() else { return eprintln!("no AVX-512 here: the 16-lane thread is not used") };
        let data: Vec<Vec<u8>> = [10 * 64 + 5, 100 * 64, 3 * 64].iter().enumerate().map(|(n, &len)| bytes(len, n as u64)).collect();
        let mut jobs: Vec<Job> = data
            .iter()
            .map(|d| {
                let mut job = Job::default();
                job.take(vec![Bytes::copy_from_slice(d)], d.len());
                job
            })
            .collect();
        // Three bodies fill too few lanes for bodies still arriving.
        assert_eq!(side_by_side(jobs.iter_mut().collect(), Some(kernel), 4, 0), 0);
        // The first is due: hashed to its last whole block, the others beside it meanwhile.
        assert_eq!(side_by_side(jobs.iter_mut().collect(), Some(kernel), MIN_LANES, 1), 10);
        assert_eq!(jobs.iter().map(Job::blocks).collect::<Vec<_>>(), [0, 90, 0]);
        for (job, d) in jobs.iter_mut().zip(&data) {
            job.catch_up();
            assert_eq!(std::mem::take(&mut job.hash).finalize(), reference(d));
        }
    }

    #[tokio::test]
    async fn a_body_outliving_the_thread_gets_no_hash_and_never_waits_for_room() {
        let lanes = Lanes::with_kernel(None);
        let mut body = lanes.hand_over(Md5::new());
        drop(lanes);
        let fed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            body.update(Bytes::from(vec![1u8; ROOM_BYTES + 10])).await;
            body.update(Bytes::from(vec![2u8; ROOM_BYTES])).await;
            body.finish().await
        });
        assert_eq!(fed.await.expect("no wait for room once the thread is gone"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn bodies_hash_side_by_side_one_at_a_time() {
        bodies_hash_side_by_side(None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn bodies_hash_side_by_side_in_16_lanes() {
        match kernel16() {
            Some(k) => bodies_hash_side_by_side(Some(k)).await,
            None => eprintln!("no AVX-512 here: the 16-lane thread is not used"),
        }
    }
}
