//! `tessera-netem`: the IO edge of the crate. Binds the netfilter queues in the current
//! network namespace, feeds each packet to its queue's [`Link`] and issues the verdicts the
//! links release. Run it inside the namespace whose iptables rules queue to it
//! (`ip netns exec NS tessera-netem --queue 0 --delay-ms 50 --loss-pct 1`).

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nfq::{Message, Queue, Verdict};
use tessera_netem::{parse_args, Args, Link};

/// Longest sleep between two looks at the socket. `nfq` does not expose its socket to
/// poll on, so the loop polls it non-blocking: at 1 ms a packet waits at most 1 ms more
/// than its delay, for a few thousand cheap syscalls a second.
const TICK: Duration = Duration::from_millis(1);

/// Packets the kernel may hold for us before it drops new ones.
const KERNEL_QUEUE_LEN: u32 = 8192;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() -> Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("sigaction");
        }
    }
    Ok(())
}

struct Netem {
    queue: Queue,
    /// (queue number, its link), in command-line order.
    links: Vec<(u16, Link<Message>)>,
    /// Packets on a queue we did not bind (should not happen): accepted at once.
    strays: u64,
}

impl Netem {
    fn open(args: &Args) -> Result<Self> {
        let mut queue = Queue::open().context(
            "opening a netfilter netlink socket (root? CONFIG_NETFILTER_NETLINK_QUEUE?)",
        )?;
        for spec in &args.queues {
            let n = spec.queue;
            queue.bind(n).with_context(|| {
                format!("binding netfilter queue {n} (is another program bound to it?)")
            })?;
            // Metadata only: the verdict needs the packet id, not its bytes.
            queue
                .set_copy_range(n, 0)
                .with_context(|| format!("queue {n}: copy range"))?;
            queue
                .set_queue_max_len(n, KERNEL_QUEUE_LEN)
                .with_context(|| format!("queue {n}: max length"))?;
            queue
                .set_fail_open(n, false)
                .with_context(|| format!("queue {n}: fail-open"))?;
        }
        queue.set_nonblocking(true);
        Ok(Netem {
            queue,
            links: args
                .queues
                .iter()
                .map(|s| (s.queue, Link::new(s)))
                .collect(),
            strays: 0,
        })
    }

    fn verdict(&mut self, mut msg: Message, verdict: Verdict) -> Result<()> {
        msg.set_verdict(verdict);
        self.queue.verdict(msg).context("sending a verdict")
    }

    /// Takes every packet the kernel has for us.
    fn receive(&mut self, now: Instant) -> Result<()> {
        loop {
            let msg = match self.queue.recv() {
                Ok(msg) => msg,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
                Err(e) => return Err(e).context("receiving from the netfilter queue"),
            };
            let n = msg.get_queue_num();
            match self.links.iter_mut().find(|(q, _)| *q == n) {
                Some((_, link)) => {
                    if let Some(msg) = link.push(msg, now) {
                        self.verdict(msg, Verdict::Drop)?;
                    }
                }
                None => {
                    self.strays += 1;
                    self.verdict(msg, Verdict::Accept)?;
                }
            }
        }
    }

    /// Accepts every packet that is due; returns when the next one will be.
    fn release(&mut self, now: Instant) -> Result<Option<Instant>> {
        let mut next: Option<Instant> = None;
        for i in 0..self.links.len() {
            while let Some(msg) = self.links[i].1.pop_due(now) {
                self.verdict(msg, Verdict::Accept)?;
            }
            if let Some(due) = self.links[i].1.next_due() {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        Ok(next)
    }

    /// Accepts everything still held, so stopping us loses nothing in flight.
    fn flush(&mut self) -> Result<()> {
        let mut held = Vec::new();
        for (_, link) in &mut self.links {
            held.extend(link.drain());
        }
        for msg in held {
            self.verdict(msg, Verdict::Accept)?;
        }
        Ok(())
    }

    fn print_stats(&self, label: &str) {
        let mut err = std::io::stderr().lock();
        for (q, link) in &self.links {
            let s = link.stats();
            let _ = writeln!(
                err,
                "tessera-netem: {label} queue {q}: received {} dropped {} accepted {} held {}",
                s.received,
                s.dropped,
                s.released,
                link.held()
            );
        }
        if self.strays > 0 {
            let _ = writeln!(
                err,
                "tessera-netem: {label} stray packets accepted {}",
                self.strays
            );
        }
    }
}

fn run(args: &Args) -> Result<()> {
    install_signal_handlers()?;
    let mut netem = Netem::open(args)?;
    for s in &args.queues {
        eprintln!(
            "tessera-netem: queue {}: delay {} ms, loss {}%, seed {}",
            s.queue,
            s.delay.as_secs_f64() * 1000.0,
            s.loss_pct,
            s.seed
        );
    }
    println!("ready");
    std::io::stdout().flush().ok();
    let mut next_stats = args.stats_every.map(|d| Instant::now() + d);
    while !STOP.load(Ordering::SeqCst) {
        let now = Instant::now();
        netem.receive(now)?;
        let next_due = netem.release(now)?;
        if let (Some(at), Some(every)) = (next_stats, args.stats_every) {
            if now >= at {
                netem.print_stats("stats");
                next_stats = Some(at + every);
            }
        }
        let wait = next_due.map_or(TICK, |due| {
            due.saturating_duration_since(Instant::now()).min(TICK)
        });
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
    netem.flush()?;
    netem.print_stats("exit");
    Ok(())
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{}", tessera_netem::USAGE);
            return;
        }
        Err(e) => {
            eprintln!("tessera-netem: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("tessera-netem: {e:#}");
        std::process::exit(1);
    }
}
