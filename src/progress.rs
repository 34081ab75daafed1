//! The progress view: turns the run's [`Event`]s (image and blob level) into
//! a display on stderr. On a terminal, one bar per blob and an overall bar
//! per image with bytes, percent, speed and ETA; otherwise plain lines; with
//! `-q`, nothing.
//!
//! No bar line is wider than the terminal: the image's name is cut to what
//! is left ([`Fit`] picks shorter bars and fewer fields for narrow
//! terminals), and a resized terminal gets lines for its new width.

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
    /// The terminal's width class the bars are styled for, and when it was
    /// last looked at.
    fit: Fit,
    fit_checked: Instant,
    total: Option<ProgressBar>,
    /// Images started and not yet done (several go at once): one overall
    /// line counts them all.
    active: usize,
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
                fit: Fit::of_terminal(),
                fit_checked: Instant::now(),
                total: None,
                active: 0,
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
            } => {
                st.active += 1;
                line(&format!(
                    "{image} ({platform}): {blobs} blobs, {}",
                    human_bytes(bytes)
                ));
            }
            Event::ImageDone => {
                st.active = st.active.saturating_sub(1);
                if st.active == 0 {
                    st.plain.clear();
                }
            }
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
                    Skip::LeftOut => "left out: the target has it",
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
        st.refit();
        let (image_template, blob_template) = (st.fit.image(), st.fit.blob());
        match event {
            Event::ImageStarted {
                image,
                platform,
                bytes,
                ..
            } => {
                st.active += 1;
                match &st.total {
                    Some(total) => {
                        total.inc_length(bytes);
                        total.set_message(format!("{} images", st.active));
                    }
                    None => {
                        let bar = multi.add(bar(bytes, image_template));
                        bar.set_message(format!("{image} ({platform})"));
                        st.total = Some(bar);
                    }
                }
            }
            Event::ImageDone => {
                st.active = st.active.saturating_sub(1);
                if st.active > 0 {
                    if let Some(total) = &st.total {
                        total.set_message(format!("{} images", st.active));
                    }
                    return;
                }
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
                let bar = multi.add(bar(size, blob_template));
                bar.set_prefix(short(&digest));
                bar.set_position(offset);
                st.advance_total(offset);
                st.bars.insert(digest, bar);
            }
            Event::Checking { digest, size } => {
                let bar = multi.add(bar(size, blob_template));
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
                    let bar = multi.add(bar(size, blob_template));
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
    /// Restyles every bar when the terminal's width class changed (looked
    /// at every [`FIT_INTERVAL`] at most).
    fn refit(&mut self) {
        if self.fit_checked.elapsed() < FIT_INTERVAL {
            return;
        }
        self.fit_checked = Instant::now();
        let fit = Fit::of_terminal();
        if fit == self.fit {
            return;
        }
        self.fit = fit;
        if let Some(t) = &self.total {
            t.set_style(style(fit.image()));
        }
        for b in self.bars.values() {
            b.set_style(style(fit.blob()));
        }
    }

    fn advance_total(&self, bytes: u64) {
        if let Some(t) = &self.total {
            t.inc(bytes);
        }
    }
}

/// How much of a bar line a terminal's width has room for. The widest
/// fields: `1023.99 MiB/1023.99 MiB` (23 columns), `1023.99 MiB/s` (13),
/// `100%`, `ETA 59m`; the image's name (`{wide_msg}`) takes what is left,
/// cut short when it must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// 110 columns or more: bars of 30.
    Wide,
    /// 80 to 109: bars of 10.
    Medium,
    /// 50 to 79: no bars; percent, speed and ETA for images, bytes for blobs.
    Narrow,
    /// Fewer: percent only.
    Tiny,
}

/// How often the terminal's width is looked at again.
const FIT_INTERVAL: Duration = Duration::from_millis(250);

impl Fit {
    fn of_width(columns: u16) -> Fit {
        match columns {
            110.. => Fit::Wide,
            80..=109 => Fit::Medium,
            50..=79 => Fit::Narrow,
            _ => Fit::Tiny,
        }
    }

    fn of_terminal() -> Fit {
        let (_, columns) = console::Term::stderr().size();
        Fit::of_width(columns)
    }

    /// The template of an image's overall line.
    fn image(self) -> &'static str {
        match self {
            Fit::Wide => {
                "{wide_msg:.bold} [{bar:30.green/dim}] {binary_bytes}/{binary_total_bytes} {percent:>3}% {binary_bytes_per_sec} ETA {eta}"
            }
            Fit::Medium => {
                "{wide_msg:.bold} [{bar:10.green/dim}] {binary_bytes}/{binary_total_bytes} {percent:>3}% {binary_bytes_per_sec} ETA {eta}"
            }
            Fit::Narrow => "{wide_msg:.bold} {percent:>3}% {binary_bytes_per_sec} ETA {eta}",
            Fit::Tiny => "{wide_msg:.bold} {percent:>3}%",
        }
    }

    /// The template of a blob's line.
    fn blob(self) -> &'static str {
        match self {
            Fit::Wide => {
                "  {prefix} [{bar:30.cyan/dim}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}"
            }
            Fit::Medium => {
                "  {prefix} [{bar:10.cyan/dim}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}"
            }
            Fit::Narrow => "  {prefix} {binary_bytes}/{binary_total_bytes}",
            Fit::Tiny => "  {prefix} {percent:>3}%",
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(style(template));
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use indicatif::TermLike;

    use super::*;

    /// A terminal of a fixed width that keeps what is written to it.
    #[derive(Debug, Clone)]
    struct Recorder {
        width: u16,
        written: Arc<Mutex<Vec<String>>>,
    }

    impl TermLike for Recorder {
        fn width(&self) -> u16 {
            self.width
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.written.lock().unwrap().push(s.to_string());
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.write_line(s)
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The widest line a bar in `template` draws on a terminal `width` wide,
    /// with the widest numbers and a long image name.
    fn widest(width: u16, template: &str) -> usize {
        let term = Recorder {
            width,
            written: Arc::default(),
        };
        let bar = ProgressBar::with_draw_target(
            Some(1024 * 1024 * 1024 - 10_000),
            ProgressDrawTarget::term_like(Box::new(term.clone())),
        );
        bar.set_style(style(template));
        bar.set_prefix("0123456789ab");
        bar.set_message(format!(
            "registry.example.com/{}:v1 (linux/arm64/v8)",
            "a".repeat(90)
        ));
        bar.set_position(1000 * 1024 * 1024 + 1);
        bar.tick();
        let widest = term
            .written
            .lock()
            .unwrap()
            .iter()
            .flat_map(|w| {
                w.split('\n')
                    .map(console::measure_text_width)
                    .collect::<Vec<_>>()
            })
            .max()
            .unwrap_or(0);
        assert!(widest > 0, "the bar drew nothing at {width} columns");
        widest
    }

    #[test]
    fn no_line_is_wider_than_the_terminal() {
        for width in [20, 40, 49, 50, 64, 79, 80, 95, 109, 110, 160, 250] {
            let fit = Fit::of_width(width);
            for template in [fit.image(), fit.blob()] {
                let drawn = widest(width, template);
                assert!(
                    drawn <= usize::from(width),
                    "{width} columns ({fit:?}): a line of {drawn} from {template}"
                );
            }
        }
    }

    #[test]
    fn wider_terminals_get_more() {
        assert_eq!(Fit::of_width(200), Fit::Wide);
        assert_eq!(Fit::of_width(100), Fit::Medium);
        assert_eq!(Fit::of_width(60), Fit::Narrow);
        assert_eq!(Fit::of_width(30), Fit::Tiny);
        // The measure sees a line that does not fit (as the name uncut would be).
        assert!(widest(80, "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes}") > 80);
        // The name takes what is left: more of it on a wider terminal.
        assert!(widest(200, Fit::Wide.image()) > widest(110, Fit::Wide.image()));
    }
}
