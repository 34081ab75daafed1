//! The progress view: turns the run's [`Event`]s (image and blob level) into
//! a display on stderr. On a terminal, one bar per blob and an overall bar
//! per image with bytes, percent, speed and ETA; otherwise plain lines; with
//! `-q`, nothing.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::digest::Digest;
use crate::events::{Event, Observer, Skip};
use crate::report::human_bytes;

/// The live multi-bar display, if any, so that log lines can be printed
/// above it instead of through it.
static MULTI: OnceLock<MultiProgress> = OnceLock::new();

/// Writes `buf` to stderr without tearing the progress display.
pub fn write_stderr(buf: &[u8]) -> std::io::Result<()> {
    match MULTI.get() {
        Some(m) => m.suspend(|| std::io::stderr().write_all(buf)),
        None => std::io::stderr().write_all(buf),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Plain,
    Quiet,
}

pub struct View {
    mode: Mode,
    state: Mutex<State>,
}

struct State {
    multi: Option<MultiProgress>,
    total: Option<ProgressBar>,
    bars: HashMap<Digest, ProgressBar>,
    /// Plain mode: bytes so far and when we last printed, per blob.
    plain: HashMap<Digest, (u64, u64, Instant)>,
}

const PLAIN_INTERVAL: Duration = Duration::from_secs(10);

impl View {
    pub fn new(mode: Mode) -> View {
        let multi = (mode == Mode::Bars).then(|| {
            let m = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let _ = MULTI.set(m.clone());
            m
        });
        View {
            mode,
            state: Mutex::new(State {
                multi,
                total: None,
                bars: HashMap::new(),
                plain: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The terminal view of an event, one line at a time.
    fn plain(&self, event: Event) {
        let mut st = self.state();
        match event {
            Event::ImageStarted {
                image,
                platform,
                bytes,
                blobs,
            } => line(&format!(
                "{image} ({platform}): {blobs} blobs, {}",
                human_bytes(bytes)
            )),
            Event::ImageDone => st.plain.clear(),
            Event::Note(text) => line(&text),
            Event::Cached { digest, size } => line(&format!(
                "  {}: in cache ({})",
                short(&digest),
                human_bytes(size)
            )),
            Event::Started {
                digest,
                size,
                offset,
            } => {
                line(&if offset > 0 {
                    format!(
                        "  {}: resuming at {} of {}",
                        short(&digest),
                        human_bytes(offset),
                        human_bytes(size)
                    )
                } else {
                    format!("  {}: downloading {}", short(&digest), human_bytes(size))
                });
                st.plain.insert(digest, (offset, size, Instant::now()));
            }
            Event::Checking { digest, size } => {
                line(&format!(
                    "  {}: checking {}",
                    short(&digest),
                    human_bytes(size)
                ));
                st.plain.insert(digest, (0, size, Instant::now()));
            }
            Event::Progress { digest, bytes } => {
                if let Some((done, size, last)) = st.plain.get_mut(&digest) {
                    *done += bytes;
                    if last.elapsed() >= PLAIN_INTERVAL {
                        *last = Instant::now();
                        let pct = (*done * 100).checked_div(*size).unwrap_or(100);
                        line(&format!(
                            "  {}: {} of {} ({pct}%)",
                            short(&digest),
                            human_bytes(*done),
                            human_bytes(*size)
                        ));
                    }
                }
            }
            Event::Rewound { digest, offset } => {
                if let Some((done, _, _)) = st.plain.get_mut(&digest) {
                    *done = offset;
                }
                line(&format!(
                    "  {}: restarting at byte {offset}",
                    short(&digest)
                ));
            }
            Event::Finished { digest } => {
                st.plain.remove(&digest);
                line(&format!("  {}: done", short(&digest)));
            }
            Event::Uploading {
                digest,
                size,
                offset,
            } => {
                line(&if offset > 0 {
                    format!(
                        "  {}: upload going on at {} of {}",
                        short(&digest),
                        human_bytes(offset),
                        human_bytes(size)
                    )
                } else {
                    format!("  {}: uploading {}", short(&digest), human_bytes(size))
                });
                st.plain.insert(digest, (offset, size, Instant::now()));
            }
            Event::Skipped { digest, size, why } => line(&format!(
                "  {}: {} ({})",
                short(&digest),
                match why {
                    Skip::Present => "already there",
                    Skip::Mounted => "mounted",
                },
                human_bytes(size)
            )),
        }
    }

    /// The bars' view of an event.
    fn bars(&self, event: Event) {
        let mut st = self.state();
        let Some(multi) = st.multi.clone() else {
            return;
        };
        match event {
            Event::ImageStarted {
                image,
                platform,
                bytes,
                ..
            } => {
                let bar = multi.add(bar(bytes, IMAGE_TEMPLATE));
                bar.set_prefix(format!("{image} ({platform})"));
                st.total = Some(bar);
            }
            Event::ImageDone => {
                if let Some(total) = st.total.take() {
                    total.finish_and_clear();
                }
                for (_, bar) in st.bars.drain() {
                    bar.finish_and_clear();
                }
            }
            Event::Note(text) => {
                let _ = multi.println(text);
            }
            Event::Cached { size, .. } => st.advance_total(size),
            Event::Started {
                digest,
                size,
                offset,
            } => {
                let bar = multi.add(bar(size, BLOB_TEMPLATE));
                bar.set_prefix(short(&digest));
                bar.set_position(offset);
                st.advance_total(offset);
                st.bars.insert(digest, bar);
            }
            Event::Checking { digest, size } => {
                let bar = multi.add(bar(size, BLOB_TEMPLATE));
                bar.set_prefix(short(&digest));
                st.bars.insert(digest, bar);
            }
            Event::Progress { digest, bytes } => {
                if let Some(b) = st.bars.get(&digest) {
                    b.inc(bytes);
                }
                st.advance_total(bytes);
            }
            Event::Rewound { digest, offset } => {
                if let Some(b) = st.bars.get(&digest) {
                    let back = b.position().saturating_sub(offset);
                    b.set_position(offset);
                    if let Some(t) = &st.total {
                        t.set_position(t.position().saturating_sub(back));
                    }
                }
            }
            Event::Finished { digest } => {
                if let Some(b) = st.bars.remove(&digest) {
                    b.finish_and_clear();
                }
            }
            Event::Uploading {
                digest,
                size,
                offset,
            } => match st.bars.get(&digest) {
                // Going on after a break: back to where the registry stands.
                Some(b) => {
                    let back = b.position().saturating_sub(offset);
                    b.set_position(offset);
                    if let Some(t) = &st.total {
                        t.set_position(t.position().saturating_sub(back));
                    }
                }
                None => {
                    let bar = multi.add(bar(size, BLOB_TEMPLATE));
                    bar.set_prefix(short(&digest));
                    bar.set_position(offset);
                    st.advance_total(offset);
                    st.bars.insert(digest, bar);
                }
            },
            Event::Skipped { size, .. } => st.advance_total(size),
        }
    }
}

impl State {
    fn advance_total(&self, bytes: u64) {
        if let Some(t) = &self.total {
            t.inc(bytes);
        }
    }
}

const IMAGE_TEMPLATE: &str = "{prefix:.bold} [{bar:30.green/dim}] {binary_bytes}/{binary_total_bytes} {percent:>3}% {binary_bytes_per_sec} ETA {eta}";
const BLOB_TEMPLATE: &str = "  {prefix} [{bar:30.cyan/dim}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}";

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

fn line(text: &str) {
    let _ = write_stderr(format!("{text}\n").as_bytes());
}

fn short(d: &Digest) -> String {
    d.short(12).to_string()
}

impl Observer for View {
    fn event(&self, event: Event) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => self.plain(event),
            Mode::Bars => self.bars(event),
        }
    }
}
