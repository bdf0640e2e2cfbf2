//! How the terminal client shows a job: `indicatif` bars when stdout is a
//! terminal, one plain line per state when it is not, and the final line in
//! both cases. Pure formatting and drawing: it gets states from
//! [`client`](super::client) and never talks to the server.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::client::{Job, Stage};
use crate::jobs::JobStatus;

/// Steps of the overall bar: progress is shown to a tenth of a percent.
const OVERALL_STEPS: u64 = 1000;

/// Where states go.
pub enum Display {
    /// Bars redrawn in place on a terminal.
    Bars(Bars),
    /// One line per state, for pipes and logs.
    Lines,
}

impl Display {
    /// Bars if stdout is a terminal, else lines.
    pub fn for_stdout() -> Self {
        if std::io::stdout().is_terminal() {
            Display::Bars(Bars::new())
        } else {
            Display::Lines
        }
    }

    /// Shows one state of the job.
    pub fn show(&mut self, job: &Job) {
        match self {
            Display::Bars(bars) => bars.show(job),
            Display::Lines => print_line(&state_line(job)),
        }
    }

    /// Draws the last state once more and stops, leaving the cursor on the
    /// line below, for the final line.
    pub fn finish(&mut self) {
        if let Display::Bars(bars) = self {
            bars.finish();
        }
    }

    /// Stops drawing and leaves the screen as it is (the terminal has just
    /// echoed `^C` below the bars, so a redraw would land one line low),
    /// with the cursor on a fresh line, for a prompt.
    pub fn interrupt(&mut self) {
        if let Display::Bars(bars) = self {
            bars.interrupt();
        }
    }
}

/// Prints `line` to stdout; a closed pipe is not worth a panic.
pub fn print_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// Three lines: the overall bar with status, percent and ETA; the current
/// stage's bar with its counter and rate; the job's message.
pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    stage: ProgressBar,
    message: ProgressBar,
    /// Whether anything was drawn, so that stopping adds no empty line.
    drawn: bool,
}

impl Bars {
    fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let overall = multi.add(
            ProgressBar::new(OVERALL_STEPS)
                .with_style(style("{prefix:<12.bold} [{bar:40.cyan/blue}] {percent:>3}%  {msg}")),
        );
        let stage = multi.add(ProgressBar::no_length().with_style(style("{prefix:<12} [{bar:40.green/white}] {msg}")));
        let message = multi.add(ProgressBar::no_length().with_style(style("{wide_msg:.dim}")));
        Bars {
            multi,
            overall,
            stage,
            message,
            drawn: false,
        }
    }

    fn show(&mut self, job: &Job) {
        self.drawn = true;
        self.overall.set_prefix(job.status.as_str());
        self.overall.set_position(overall_position(job.progress));
        self.overall
            .set_message(job.eta_seconds.map(eta_words).unwrap_or_default());
        match &job.stage {
            Some(stage) => {
                self.stage.set_prefix(stage.name.clone());
                match stage.total {
                    Some(total) => {
                        self.stage.set_length(total);
                        self.stage.set_position(stage.current.min(total));
                    }
                    None => {
                        self.stage.unset_length();
                        self.stage.set_position(0);
                    }
                }
                let mut text = counter(stage);
                if let Some(rate) = job.rate {
                    let unit = stage.unit.as_deref().map(|unit| format!(" {unit}")).unwrap_or_default();
                    let _ = write!(text, "  {rate:.1}{unit}/s");
                }
                let _ = write!(text, "  (stage {} of {})", stage.index + 1, stage.count);
                self.stage.set_message(text);
            }
            None => {
                self.stage.set_prefix("");
                self.stage.unset_length();
                self.stage.set_message("no stage yet");
            }
        }
        self.message.set_message(job.message.clone().unwrap_or_default());
    }

    fn finish(&mut self) {
        for bar in [&self.overall, &self.stage, &self.message] {
            bar.abandon();
        }
        self.leave();
    }

    fn interrupt(&mut self) {
        self.multi.set_draw_target(ProgressDrawTarget::hidden());
        self.leave();
    }

    /// Moves below the bars: indicatif leaves the cursor at the end of the
    /// last one.
    fn leave(&mut self) {
        if std::mem::take(&mut self.drawn) {
            print_line("");
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("the bar templates are fixed and valid")
        .progress_chars("█▓░")
}

/// The overall bar's position: progress 0.999 (the cap of an unfinished
/// job) stays below the end, so the bar reads 100% only when completed.
fn overall_position(progress: f64) -> u64 {
    (progress.clamp(0.0, 1.0) * OVERALL_STEPS as f64).floor() as u64
}

/// One state as a plain line:
/// `seq=12 running 42.0% analyzing 30/100 chunks 12.5/s eta 8s "Analyzing chunk 30/100"`.
/// Parts the job does not report are left out.
pub fn state_line(job: &Job) -> String {
    let mut line = format!("seq={} {} {:.1}%", job.seq, job.status.as_str(), job.progress * 100.0);
    if let Some(stage) = &job.stage {
        let _ = write!(line, " {} {}", stage.name, counter(stage));
    }
    if let Some(rate) = job.rate {
        let _ = write!(line, " {rate:.1}/s");
    }
    if let Some(eta) = job.eta_seconds {
        let _ = write!(line, " eta {}", eta_short(eta));
    }
    if let Some(message) = &job.message {
        let _ = write!(line, " {message:?}");
    }
    line
}

/// A stage's counter: `30/100 chunks`, `30 chunks` with no total, `30/100`
/// with no unit.
fn counter(stage: &Stage) -> String {
    let mut text = stage.current.to_string();
    if let Some(total) = stage.total {
        let _ = write!(text, "/{total}");
    }
    if let Some(unit) = &stage.unit {
        let _ = write!(text, " {unit}");
    }
    text
}

/// `8s`, `2m05s`, `1h02m`.
fn eta_short(seconds: f64) -> String {
    let seconds = seconds.max(0.0).round() as u64;
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// `about 12 s left`, `about 3 min left`, `about 2 h left`.
fn eta_words(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    if seconds < 1.0 {
        "less than a second left".to_owned()
    } else if seconds < 90.0 {
        format!("about {} s left", seconds.round())
    } else if seconds < 90.0 * 60.0 {
        format!("about {} min left", (seconds / 60.0).round())
    } else {
        format!("about {} h left", (seconds / 3600.0).round())
    }
}

/// The line printed once the job has ended: its status, and its result when
/// completed or its error (code, message, stage) when failed or cancelled.
pub fn final_line(job: &Job) -> String {
    let mut line = format!("job {} {}", job.id, job.status.as_str());
    if let Some(took) = duration(job) {
        let _ = write!(line, " after {took:.1} s");
    }
    match (&job.status, &job.error) {
        (JobStatus::Completed, _) => {
            let _ = write!(line, "; result: {}", job.result);
        }
        (_, Some(error)) => {
            if let Some(stage) = &error.stage {
                let _ = write!(line, " in stage {stage}");
            }
            let _ = write!(line, ": {}: {}", error.code, error.message);
            if error.retryable {
                line.push_str(" (retryable)");
            }
        }
        (_, None) => {}
    }
    line
}

/// Seconds from start to finish, when both are known.
fn duration(job: &Job) -> Option<f64> {
    let parse = |time: &Option<String>| chrono::DateTime::parse_from_rfc3339(time.as_deref()?).ok();
    let took = parse(&job.finished_at)? - parse(&job.started_at)?;
    Some(took.num_microseconds()? as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(value: serde_json::Value) -> Job {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_state_line_has_every_reported_part() {
        let running = job(serde_json::json!({
            "id": "x", "kind": "demo", "status": "running", "seq": 12, "progress": 0.42,
            "stage": { "name": "analyzing", "index": 1, "count": 4, "current": 30, "total": 100, "unit": "chunks" },
            "message": "Analyzing chunk 30/100", "rate": 12.5, "eta_seconds": 8.2,
        }));
        assert_eq!(
            state_line(&running),
            r#"seq=12 running 42.0% analyzing 30/100 chunks 12.5/s eta 8s "Analyzing chunk 30/100""#
        );
    }

    #[test]
    fn a_state_line_leaves_out_what_is_unknown() {
        let queued = job(serde_json::json!({
            "id": "x", "kind": "demo", "status": "queued", "seq": 1, "progress": 0.0,
            "stage": null, "message": null, "rate": null, "eta_seconds": null,
        }));
        assert_eq!(state_line(&queued), "seq=1 queued 0.0%");
    }

    #[test]
    fn times_left_read_as_people_say_them() {
        assert_eq!(eta_words(12.4), "about 12 s left");
        assert_eq!(eta_words(200.0), "about 3 min left");
        assert_eq!(eta_words(7200.0), "about 2 h left");
        assert_eq!(eta_short(125.0), "2m05s");
        assert_eq!(eta_short(3720.0), "1h02m");
    }

    #[test]
    fn the_bar_reaches_its_end_only_when_completed() {
        assert_eq!(overall_position(0.999), 999);
        assert_eq!(overall_position(1.0), OVERALL_STEPS);
    }

    #[test]
    fn a_failed_job_ends_with_its_error() {
        let failed = job(serde_json::json!({
            "id": "x", "kind": "demo", "status": "failed", "seq": 9, "progress": 0.3,
            "stage": null, "message": null, "rate": null, "eta_seconds": null,
            "error": { "code": "demo_failure", "message": "it broke", "stage": "analyzing", "retryable": true },
            "started_at": "2026-11-22T18:00:00.000000Z", "finished_at": "2026-11-22T18:00:01.500000Z",
        }));
        assert_eq!(
            final_line(&failed),
            "job x failed after 1.5 s in stage analyzing: demo_failure: it broke (retryable)"
        );
    }
}
