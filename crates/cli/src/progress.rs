//! Build progress for people and machines: BuildKit's plain format for CI logs, a live view on
//! a terminal, or one JSON event per line.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use build::{Progress, ProgressEvent};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    Auto,
    Tty,
    Plain,
    Json,
    Quiet,
}

impl ProgressMode {
    /// `auto` is a live view when stderr is a terminal, plain lines otherwise.
    pub fn resolve(self) -> ProgressMode {
        match self {
            ProgressMode::Auto if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
                ProgressMode::Tty
            }
            ProgressMode::Auto => ProgressMode::Plain,
            other => other,
        }
    }
}

/// Renders events to stderr.
pub struct Renderer {
    mode: ProgressMode,
    start: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    vertices: BTreeMap<usize, Vertex>,
    /// Lines of the live view currently on screen (to redraw over them).
    drawn: usize,
    /// The vertex whose lines plain mode printed last (BuildKit separates vertices by a blank
    /// line).
    last: Option<usize>,
}

struct Vertex {
    name: String,
    started: Instant,
    status: Status,
    tail: Vec<String>,
    miss: Option<String>,
}

#[derive(Clone, PartialEq)]
enum Status {
    Running,
    Cached,
    Done(f64),
    Failed,
}

impl Renderer {
    pub fn new(mode: ProgressMode) -> Renderer {
        Renderer {
            mode: mode.resolve(),
            start: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    fn plain(&self, state: &mut State, id: usize, line: &str) {
        let mut err = std::io::stderr().lock();
        if state.last != Some(id) && state.last.is_some() {
            let _ = writeln!(err);
        }
        state.last = Some(id);
        let _ = writeln!(err, "#{id} {line}");
    }

    fn on_plain(&self, state: &mut State, event: &ProgressEvent) {
        match event {
            ProgressEvent::Started { id, name } => self.plain(state, *id, name),
            ProgressEvent::Cached { id } => self.plain(state, *id, "CACHED"),
            ProgressEvent::Miss { id, reason } => {
                self.plain(state, *id, &format!("cache miss: {reason}"))
            }
            ProgressEvent::Log { id, data } => {
                let elapsed = state
                    .vertices
                    .get(id)
                    .map(|v| v.started.elapsed().as_secs_f64())
                    .unwrap_or(0.0);
                let text = String::from_utf8_lossy(data);
                self.plain(
                    state,
                    *id,
                    &format!("{elapsed:.3} {}", text.trim_end_matches('\n')),
                );
            }
            ProgressEvent::Done { id, seconds } => {
                self.plain(state, *id, &format!("DONE {seconds:.1}s"))
            }
            ProgressEvent::Failed { id, message } => {
                let first = message.lines().next().unwrap_or("");
                self.plain(state, *id, &format!("ERROR: {first}"))
            }
            ProgressEvent::Warning { message } => {
                let _ = writeln!(std::io::stderr(), "{message}");
            }
        }
    }

    fn track(&self, state: &mut State, event: &ProgressEvent) {
        match event {
            ProgressEvent::Started { id, name } => {
                state.vertices.insert(
                    *id,
                    Vertex {
                        name: name.clone(),
                        started: Instant::now(),
                        status: Status::Running,
                        tail: Vec::new(),
                        miss: None,
                    },
                );
            }
            ProgressEvent::Cached { id } => set_status(state, *id, Status::Cached),
            ProgressEvent::Done { id, seconds } => set_status(state, *id, Status::Done(*seconds)),
            ProgressEvent::Failed { id, .. } => set_status(state, *id, Status::Failed),
            ProgressEvent::Miss { id, reason } => {
                if let Some(v) = state.vertices.get_mut(id) {
                    v.miss = Some(reason.clone());
                }
            }
            ProgressEvent::Log { id, data } => {
                if let Some(v) = state.vertices.get_mut(id) {
                    v.tail
                        .push(String::from_utf8_lossy(data).trim_end().to_string());
                    let excess = v.tail.len().saturating_sub(6);
                    v.tail.drain(..excess);
                }
            }
            ProgressEvent::Warning { .. } => {}
        }
    }

    /// Redraws the live view: one line per step, the tail of running steps' output.
    fn draw(&self, state: &mut State) {
        let mut out = String::new();
        if state.drawn > 0 {
            out.push_str(&format!("\x1b[{}F\x1b[J", state.drawn));
        }
        let width = terminal_width();
        let mut lines = vec![format!(
            "[+] Building {:.1}s ({}/{}) ",
            self.start.elapsed().as_secs_f64(),
            state
                .vertices
                .values()
                .filter(|v| v.status != Status::Running)
                .count(),
            state.vertices.len()
        )];
        for v in state.vertices.values() {
            let status = match &v.status {
                Status::Running => format!("{:.1}s", v.started.elapsed().as_secs_f64()),
                Status::Cached => "CACHED".to_string(),
                Status::Done(s) => format!("{s:.1}s"),
                Status::Failed => "ERROR".to_string(),
            };
            lines.push(fit(&format!(" => {}", v.name), &status, width));
            if v.status == Status::Running {
                for t in &v.tail {
                    lines.push(fit(&format!(" => => {t}"), "", width));
                }
            }
        }
        for l in &lines {
            out.push_str(l);
            out.push('\n');
        }
        state.drawn = lines.len();
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}

fn set_status(state: &mut State, id: usize, status: Status) {
    if let Some(v) = state.vertices.get_mut(&id) {
        v.status = status;
    }
}

fn terminal_width() -> usize {
    rustix::termios::tcgetwinsize(std::io::stderr())
        .map(|w| w.ws_col as usize)
        .ok()
        .filter(|w| *w > 20)
        .unwrap_or(100)
}

/// `left` and `right` on one line of `width` columns, `left` cut to fit.
fn fit(left: &str, right: &str, width: usize) -> String {
    let room = width.saturating_sub(right.chars().count() + 1);
    let mut l: String = left.chars().take(room).collect();
    let pad = room.saturating_sub(l.chars().count());
    l.extend(std::iter::repeat_n(' ', pad));
    format!("{l} {right}")
}

impl Progress for Renderer {
    fn event(&self, event: ProgressEvent) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.track(&mut state, &event);
        match self.mode {
            ProgressMode::Plain => self.on_plain(&mut state, &event),
            ProgressMode::Json => {
                if let Ok(line) = serde_json::to_string(&event) {
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
            }
            ProgressMode::Tty => {
                if let ProgressEvent::Warning { message } = &event {
                    let _ = writeln!(std::io::stderr(), "{message}");
                    state.drawn = 0;
                }
                self.draw(&mut state);
            }
            ProgressMode::Quiet | ProgressMode::Auto => {}
        }
    }
}

impl Renderer {
    /// Why each step missed the cache (`--explain-cache`).
    pub fn explain(&self) -> Vec<(String, String)> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .vertices
            .values()
            .filter_map(|v| v.miss.clone().map(|m| (v.name.clone(), m)))
            .collect()
    }

    /// Plain-mode lines for a last vertex (the export), after the build itself.
    pub fn note(&self, id: usize, line: &str) {
        if self.mode == ProgressMode::Plain {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            self.plain(&mut state, id, line);
        }
    }

    pub fn next_id(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.vertices.keys().max().copied().unwrap_or(0) + 1
    }
}
