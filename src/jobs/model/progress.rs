//! Stages, counters and pace: how far a job is, how fast it goes, and how
//! long it has left. Progress is the weighted mean of the stages' fractions,
//! never decreasing, and capped below 1.0 until the job completes; rate and
//! ETA come from a smoothed pace sampled at each publish.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Change, JobModel};
use crate::jobs::{JobError, JobStatus, StageStatus};

/// Progress of a job that has not completed is capped here, so that 1.0
/// means "completed" and nothing else, even when every counter is full.
pub const PROGRESS_CAP: f64 = 0.999;

/// A stage as a job declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct StageSpec {
    pub name: String,
    pub weight: f64,
}

impl StageSpec {
    pub fn new(name: impl Into<String>, weight: f64) -> Self {
        StageSpec {
            name: name.into(),
            weight,
        }
    }
}

/// Why a list of stages cannot be declared.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StageListError {
    #[error("a stage needs a name")]
    Unnamed,
    #[error("stage {0:?} has a weight that is not a finite number >= 0")]
    BadWeight(String),
    #[error("stage {0:?} is declared twice")]
    Twice(String),
}

/// The one check of a list of stages, wherever it is declared (a job's
/// code, the demo's params, a kinds file): names unique and not empty,
/// weights finite and not negative.
pub fn check_stages<'a>(stages: impl IntoIterator<Item = (&'a str, f64)>) -> Result<(), StageListError> {
    let mut seen = std::collections::HashSet::new();
    for (name, weight) in stages {
        if name.is_empty() {
            return Err(StageListError::Unnamed);
        }
        if !weight.is_finite() || weight < 0.0 {
            return Err(StageListError::BadWeight(name.to_owned()));
        }
        if !seen.insert(name) {
            return Err(StageListError::Twice(name.to_owned()));
        }
    }
    Ok(())
}

#[derive(Clone, Debug, Serialize)]
pub(super) struct Stage {
    pub(super) name: String,
    weight: f64,
    pub(super) status: StageStatus,
    #[serde(skip)]
    pub(super) current: u64,
    #[serde(skip)]
    pub(super) total: Option<u64>,
    #[serde(skip)]
    pub(super) unit: Option<String>,
}

impl Stage {
    /// The stage's own fraction done, for the weighted sum.
    fn fraction(&self) -> f64 {
        match self.status {
            StageStatus::Done => 1.0,
            StageStatus::Pending => 0.0,
            StageStatus::Running | StageStatus::Failed | StageStatus::Cancelled => {
                match self.total {
                    Some(total) if total > 0 => (self.current as f64 / total as f64).min(1.0),
                    // An unknown or empty total says nothing about how far along it is.
                    _ => 0.0,
                }
            }
        }
    }
}

/// A smoothed rate of change of one quantity, sampled when the job is
/// published: an exponentially weighted moving average whose weight depends
/// on the time between samples, so bursts and pauses don't skew it.
///
/// The first estimate comes as soon as the quantity first moves, from the
/// first sample (a stage's pace is reset when the stage starts, so that is
/// the stage's start), however soon after it: a display would otherwise
/// lose its speed at every stage change until the next sample.
#[derive(Clone, Debug, Default)]
pub(super) struct Pace {
    last: Option<(Instant, f64)>,
    per_second: Option<f64>,
}

impl Pace {
    /// Samples closer together than this are merged into the next one.
    const MIN_SPAN: Duration = Duration::from_millis(100);
    /// The averaging time constant.
    const SMOOTHING: Duration = Duration::from_secs(3);

    fn observe(&mut self, now: Instant, value: f64) {
        let Some((then, previous)) = self.last else {
            self.last = Some((now, value));
            return;
        };
        let span = now.saturating_duration_since(then);
        let first_move = self.per_second.is_none() && value > previous && !span.is_zero();
        if span < Self::MIN_SPAN && !first_move {
            return;
        }
        let seconds = span.as_secs_f64();
        let instant_rate = ((value - previous) / seconds).max(0.0);
        let weight = 1.0 - (-seconds / Self::SMOOTHING.as_secs_f64()).exp();
        self.per_second = Some(match self.per_second {
            None => instant_rate,
            Some(rate) => rate + weight * (instant_rate - rate),
        });
        self.last = Some((now, value));
    }
}

impl JobModel {
    /// Declares the job's weighted stages, all pending. Once per job.
    pub fn declare_stages(&mut self, specs: &[StageSpec]) -> Result<Change, JobError> {
        if self.status.is_terminal() {
            return Ok(Change::None);
        }
        if !self.stages.is_empty() {
            return Err(JobError::new(
                "stages_already_declared",
                "a job declares its stages once",
            ));
        }
        check_stages(specs.iter().map(|spec| (spec.name.as_str(), spec.weight)))
            .map_err(|error| JobError::new("invalid_stage", error.to_string()))?;
        if specs.is_empty() {
            return Ok(Change::None);
        }
        self.stages = specs
            .iter()
            .map(|spec| Stage {
                name: spec.name.clone(),
                weight: spec.weight,
                status: StageStatus::Pending,
                current: 0,
                total: None,
                unit: None,
            })
            .collect();
        Ok(Change::Immediate)
    }

    /// Starts the named stage with a fresh counter. Stages run in declared
    /// order: earlier stages, including skipped ones, become `done`.
    pub fn start_stage(&mut self, name: &str, total: Option<u64>, unit: Option<&str>) -> Result<Change, JobError> {
        if self.status.is_terminal() {
            return Ok(Change::None);
        }
        let index = self
            .stages
            .iter()
            .position(|stage| stage.name == name)
            .ok_or_else(|| JobError::new("unknown_stage", format!("no stage named {name:?}")))?;
        if let Some(current) = self.current_stage {
            if index < current {
                return Err(JobError::new(
                    "stage_order",
                    format!("stage {name:?} comes before the running stage"),
                ));
            }
            if index == current {
                let stage = &mut self.stages[index];
                let unit = unit.map(str::to_owned);
                if stage.total == total && stage.unit == unit {
                    return Ok(Change::None);
                }
                stage.total = total;
                stage.unit = unit;
                return Ok(Change::Counter);
            }
        }
        for stage in &mut self.stages[..index] {
            stage.status = StageStatus::Done;
        }
        let stage = &mut self.stages[index];
        stage.status = StageStatus::Running;
        stage.current = 0;
        stage.total = total;
        stage.unit = unit.map(str::to_owned);
        self.current_stage = Some(index);
        self.stage_pace = Pace::default();
        Ok(Change::Immediate)
    }

    fn running_stage_mut(&mut self) -> Option<&mut Stage> {
        if self.status.is_terminal() {
            return None;
        }
        let index = self.current_stage?;
        Some(&mut self.stages[index])
    }

    /// Sets the running stage's counter.
    pub fn set_current(&mut self, current: u64) -> Change {
        match self.running_stage_mut() {
            Some(stage) if stage.current != current => {
                stage.current = current;
                Change::Counter
            }
            _ => Change::None,
        }
    }

    /// Adds to the running stage's counter.
    pub fn advance(&mut self, by: u64) -> Change {
        match self.running_stage_mut() {
            Some(stage) if by > 0 => {
                stage.current = stage.current.saturating_add(by);
                Change::Counter
            }
            _ => Change::None,
        }
    }

    /// Sets the running stage's total (None: unknown).
    pub fn set_total(&mut self, total: Option<u64>) -> Change {
        match self.running_stage_mut() {
            Some(stage) if stage.total != total => {
                stage.total = total;
                Change::Counter
            }
            _ => Change::None,
        }
    }

    /// Sets the running stage's counter and the message together, so that
    /// one publish carries both.
    pub fn report(&mut self, current: u64, message: &str) -> Change {
        match (self.set_current(current), self.set_message(message)) {
            (Change::None, Change::None) => Change::None,
            _ => Change::Counter,
        }
    }

    /// Sets the fraction done of a job without stages (clamped to 0..=1).
    pub fn set_fraction(&mut self, fraction: f64) -> Change {
        if self.status.is_terminal() || !self.stages.is_empty() || !fraction.is_finite() {
            return Change::None;
        }
        let fraction = fraction.clamp(0.0, 1.0);
        if fraction == self.own_fraction {
            return Change::None;
        }
        self.own_fraction = fraction;
        Change::Counter
    }

    /// Sets the human-readable message.
    pub fn set_message(&mut self, message: &str) -> Change {
        if self.status.is_terminal() || self.message.as_deref() == Some(message) {
            return Change::None;
        }
        self.message = Some(message.to_owned());
        Change::Counter
    }

    /// Each stage's share of the whole job: its weight over the sum of
    /// weights, or an equal share when every weight is zero.
    fn stage_shares(&self) -> impl Iterator<Item = f64> + '_ {
        let total_weight: f64 = self.stages.iter().map(|stage| stage.weight).sum();
        let count = self.stages.len() as f64;
        self.stages.iter().map(move |stage| {
            if total_weight > 0.0 {
                stage.weight / total_weight
            } else {
                1.0 / count
            }
        })
    }

    /// Overall progress from the stages (or the job's own fraction), before
    /// the cap and the never-decrease floor.
    fn raw_progress(&self) -> f64 {
        if self.stages.is_empty() {
            return self.own_fraction;
        }
        self.stages
            .iter()
            .zip(self.stage_shares())
            .map(|(stage, share)| share * stage.fraction())
            .sum()
    }

    /// Seconds left for the whole job. The running stage's remainder comes
    /// from its own counter and rate, since stages rarely move at the pace
    /// their weights suggest; the stages after it, from the job's overall
    /// pace. Without a counted running stage, the overall pace alone.
    fn estimate_eta(&self) -> Option<f64> {
        let job_pace = self.job_pace.per_second.filter(|pace| *pace > 0.0);
        let counted = self.current_stage.and_then(|index| {
            let stage = &self.stages[index];
            let total = stage.total.filter(|total| *total > 0)?;
            let rate = self.stage_pace.per_second.filter(|rate| *rate > 0.0)?;
            Some((index, total, rate))
        });
        let Some((index, total, rate)) = counted else {
            return job_pace.map(|pace| (1.0 - self.progress) / pace);
        };
        let stage = &self.stages[index];
        let stage_left = total.saturating_sub(stage.current) as f64 / rate;
        let later_share: f64 = self.stage_shares().skip(index + 1).sum();
        if later_share == 0.0 {
            return Some(stage_left);
        }
        // Without an overall pace yet, assume the rest goes as this stage does.
        let share = self.stage_shares().nth(index).unwrap_or(0.0);
        let later_pace = job_pace.or_else(|| Some(share * rate / total as f64).filter(|pace| *pace > 0.0))?;
        Some(stage_left + later_share / later_pace)
    }

    /// Readies the next published state: the next `seq`, the update time,
    /// and progress, rate and ETA as of `now`.
    pub fn prepare_publish(&mut self, now: Instant, wall_now: DateTime<Utc>) {
        self.seq += 1;
        self.updated_at = wall_now;
        if self.status == JobStatus::Completed {
            self.progress = 1.0;
        } else {
            // Rounded to a millionth so that float noise (0.8500000000000001)
            // does not reach clients; rounding keeps the order, so the floor holds.
            let raw = (self.raw_progress() * 1e6).round() / 1e6;
            self.progress = self.progress.max(raw.min(PROGRESS_CAP));
        }
        if self.status.is_terminal() || self.status == JobStatus::Queued {
            self.rate = None;
            self.eta_seconds = None;
            return;
        }
        if let Some(index) = self.current_stage {
            self.stage_pace.observe(now, self.stages[index].current as f64);
        }
        self.job_pace.observe(now, self.progress);
        self.rate = self.stage_pace.per_second.map(round_to_thousandths);
        self.eta_seconds = self.estimate_eta().map(round_to_thousandths);
    }
}

fn round_to_thousandths(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::super::tests::{job, publish, running_with};
    use super::super::Outcome;
    use super::*;
    use serde_json::{json, Value};
    use std::time::Duration;

    #[test]
    fn weights_that_do_not_sum_to_one_are_normalised() {
        let mut model = running_with(&[("a", 2.0), ("b", 6.0)]);
        model.start_stage("a", Some(10), None).unwrap();
        model.set_current(5);
        let view = publish(&mut model, Instant::now());
        assert_eq!(view["progress"], json!(0.125));
        assert_eq!(view["stages"][0]["weight"], json!(2.0));
        model.start_stage("b", Some(4), None).unwrap();
        model.set_current(2);
        let view = publish(&mut model, Instant::now());
        assert_eq!(view["progress"], json!(0.625));
    }

    #[test]
    fn a_stage_with_unknown_total_counts_as_not_started() {
        let mut model = running_with(&[("a", 1.0), ("b", 1.0)]);
        model.start_stage("a", None, Some("files")).unwrap();
        model.set_current(500);
        let view = publish(&mut model, Instant::now());
        assert_eq!(view["progress"], json!(0.0));
        assert_eq!(view["stage"]["total"], Value::Null);
        assert_eq!(view["stage"]["current"], json!(500));
        model.start_stage("b", None, None).unwrap();
        assert_eq!(publish(&mut model, Instant::now())["progress"], json!(0.5));
    }

    #[test]
    fn counters_past_their_total_are_capped_and_stay_below_one() {
        let mut model = running_with(&[("only", 1.0)]);
        model.start_stage("only", Some(10), None).unwrap();
        model.set_current(25);
        let view = publish(&mut model, Instant::now());
        assert_eq!(view["progress"], json!(PROGRESS_CAP));
        assert!(view["progress"].as_f64().unwrap() < 1.0);
        model
            .finish(Outcome::Completed(json!({"ok": true})), Utc::now())
            .unwrap();
        let view = publish(&mut model, Instant::now());
        assert_eq!(view["progress"], json!(1.0));
        assert_eq!(view["stages"][0]["status"], json!("done"));
        assert_eq!(view["result"], json!({"ok": true}));
    }

    #[test]
    fn a_job_without_stages_reports_its_own_fraction() {
        let mut model = job();
        model.start(Utc::now());
        assert_eq!(publish(&mut model, Instant::now())["progress"], json!(0.0));
        assert_eq!(model.set_fraction(0.4), Change::Counter);
        let view = publish(&mut model, Instant::now());
        assert_eq!(view["progress"], json!(0.4));
        assert_eq!(view["stage"], Value::Null);
        assert_eq!(model.set_fraction(1.0), Change::Counter);
        assert_eq!(publish(&mut model, Instant::now())["progress"], json!(PROGRESS_CAP));
    }

    #[test]
    fn progress_never_decreases_when_a_total_grows() {
        let mut model = running_with(&[("a", 1.0)]);
        model.start_stage("a", Some(10), None).unwrap();
        model.set_current(8);
        assert_eq!(publish(&mut model, Instant::now())["progress"], json!(0.8));
        model.set_total(Some(100));
        assert_eq!(publish(&mut model, Instant::now())["progress"], json!(0.8));
    }

    #[test]
    fn identical_reports_change_nothing() {
        let mut model = running_with(&[("a", 1.0)]);
        model.start_stage("a", Some(10), None).unwrap();
        assert_eq!(model.set_current(3), Change::Counter);
        assert_eq!(model.set_current(3), Change::None);
        assert_eq!(model.set_message("x"), Change::Counter);
        assert_eq!(model.set_message("x"), Change::None);
        assert_eq!(model.start_stage("a", Some(10), None), Ok(Change::None));
        assert_eq!(model.advance(0), Change::None);
    }

    #[test]
    fn rate_and_eta_follow_the_observed_pace() {
        let mut model = running_with(&[("a", 1.0)]);
        model.start_stage("a", Some(100), None).unwrap();
        let start = Instant::now();
        let view = publish(&mut model, start);
        assert_eq!(view["rate"], Value::Null);
        assert_eq!(view["eta_seconds"], Value::Null);
        for step in 1..=10u64 {
            model.set_current(step * 5);
            publish(&mut model, start + Duration::from_millis(step * 500));
        }
        let view = serde_json::to_value(model.view()).unwrap();
        let rate = view["rate"].as_f64().unwrap();
        assert!((rate - 10.0).abs() < 0.01, "rate {rate}");
        let eta = view["eta_seconds"].as_f64().unwrap();
        assert!((eta - 5.0).abs() < 0.1, "eta {eta}");
        // The pace halves: the estimate moves towards it, smoothly.
        for step in 1..=4u64 {
            model.set_current(50 + step * 2);
            publish(&mut model, start + Duration::from_millis(5000 + step * 400));
        }
        let rate = serde_json::to_value(model.view()).unwrap()["rate"].as_f64().unwrap();
        assert!(rate < 10.0 && rate > 5.0, "rate {rate}");
    }

    #[test]
    fn the_rate_is_estimated_from_a_stages_start_as_soon_as_its_counter_moves() {
        let mut model = running_with(&[("a", 1.0), ("b", 1.0)]);
        let start = Instant::now();
        model.start_stage("a", Some(100), None).unwrap();
        publish(&mut model, start);
        model.set_current(2);
        let view = publish(&mut model, start + Duration::from_millis(20));
        assert_eq!(view["rate"], 100.0, "2 in the stage's first 20 ms");
        model.start_stage("b", Some(100), None).unwrap();
        let started_b = start + Duration::from_millis(1000);
        assert_eq!(
            publish(&mut model, started_b)["rate"],
            Value::Null,
            "a new stage has no pace yet"
        );
        assert_eq!(
            publish(&mut model, started_b + Duration::from_millis(5))["rate"],
            Value::Null,
            "nor while its counter has not moved"
        );
        model.set_current(1);
        let view = publish(&mut model, started_b + Duration::from_millis(10));
        assert_eq!(view["rate"], 100.0, "from the stage's own start");
    }

    #[test]
    fn the_eta_follows_the_running_stage_even_when_weights_misjudge_it() {
        // "quick" is half the job by weight but fast; "slow" is slow.
        let mut model = running_with(&[("quick", 1.0), ("slow", 1.0)]);
        let start = Instant::now();
        model.start_stage("quick", Some(10), None).unwrap();
        publish(&mut model, start);
        for step in 1..=10u64 {
            model.set_current(step);
            publish(&mut model, start + Duration::from_millis(step * 100));
        }
        model.start_stage("slow", Some(100), None).unwrap();
        let slow_start = start + Duration::from_millis(1000);
        publish(&mut model, slow_start);
        for step in 1..=10u64 {
            model.set_current(step);
            publish(&mut model, slow_start + Duration::from_millis(step * 500));
        }
        // 90 steps left at 2 per second.
        let eta = serde_json::to_value(model.view()).unwrap()["eta_seconds"]
            .as_f64()
            .unwrap();
        assert!((eta - 45.0).abs() < 1.0, "eta {eta}");
    }

    #[test]
    fn invalid_stages_are_refused() {
        let mut model = job();
        assert!(model.declare_stages(&[StageSpec::new("a", -1.0)]).is_err());
        assert!(model.declare_stages(&[StageSpec::new("a", f64::NAN)]).is_err());
        assert!(model
            .declare_stages(&[StageSpec::new("a", 1.0), StageSpec::new("a", 1.0)])
            .is_err());
        assert!(model.declare_stages(&[StageSpec::new("a", 1.0)]).is_ok());
        assert!(model.declare_stages(&[StageSpec::new("b", 1.0)]).is_err());
    }

    #[test]
    fn one_check_names_what_is_wrong_with_a_stage_list() {
        assert_eq!(check_stages([("a", 1.0), ("b", 0.0)]), Ok(()));
        assert_eq!(check_stages([("", 1.0)]), Err(StageListError::Unnamed));
        for weight in [-1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                check_stages([("a", weight)]),
                Err(StageListError::BadWeight("a".to_owned()))
            );
        }
        assert_eq!(
            check_stages([("a", 1.0), ("b", 1.0), ("a", 2.0)]),
            Err(StageListError::Twice("a".to_owned()))
        );
    }
}
