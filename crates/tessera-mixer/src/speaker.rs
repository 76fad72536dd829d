//! Active-speaker choice with hysteresis, driven by smoothed levels once per tick.
//!
//! Rules (one tick = 20 ms; durations round up to whole ticks):
//! - Audible: not muted and smoothed level at or above `threshold_dbfs`.
//! - Nobody is speaker: the loudest audible participant becomes speaker at once.
//! - A challenger takes over when it has been audible and at least `switch_margin_db`
//!   louder than the speaker for `switch_after_ms` without a break, and the speaker has held
//!   the role for `min_hold_ms`. If several qualify, the loudest wins.
//! - A speaker that is inaudible (silent or muted) for `switch_after_ms` is replaced by the
//!   loudest audible participant, hold or not.
//! - Nobody audible: the last speaker stays (the big tile does not jump around in pauses).
//! - Ties go to the earlier joiner.

use tessera_types::ParticipantId;

use crate::config::SpeakerConfig;
use crate::TICK_MS;

/// One participant's standing this tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Contender {
    pub id: ParticipantId,
    pub level_dbfs: f32,
    pub muted: bool,
}

#[derive(Debug, Default)]
pub(crate) struct SpeakerTracker {
    current: Option<ParticipantId>,
    /// Ticks since `current` took over.
    held_ticks: u32,
    /// Consecutive ticks `current` has been inaudible.
    silent_ticks: u32,
    /// Per contender, in contender order: consecutive ticks louder than `current` by the margin.
    louder_ticks: Vec<(ParticipantId, u32)>,
}

fn ticks(ms: u32) -> u32 {
    ms.div_ceil(TICK_MS)
}

impl SpeakerTracker {
    pub fn current(&self) -> Option<ParticipantId> {
        self.current
    }

    /// Drops a participant that left; if it was speaker, nobody is until the next update.
    pub fn forget(&mut self, id: ParticipantId) {
        if self.current == Some(id) {
            self.current = None;
        }
        self.louder_ticks.retain(|(i, _)| *i != id);
    }

    /// Advances one tick. Returns whether the speaker changed.
    pub fn update(&mut self, cfg: &SpeakerConfig, contenders: &[Contender]) -> bool {
        let in_sync = self.louder_ticks.len() == contenders.len()
            && self
                .louder_ticks
                .iter()
                .zip(contenders)
                .all(|(l, c)| l.0 == c.id);
        if !in_sync {
            self.louder_ticks = contenders.iter().map(|c| (c.id, 0)).collect();
        }
        let audible = |c: &Contender| !c.muted && c.level_dbfs >= cfg.threshold_dbfs;
        let switch_ticks = ticks(cfg.switch_after_ms).max(1);
        let before = self.current;
        let current = self
            .current
            .and_then(|id| contenders.iter().position(|c| c.id == id));

        let next = match current {
            None => loudest(contenders, |_, c| audible(c)),
            Some(ci) => {
                self.held_ticks = self.held_ticks.saturating_add(1);
                let cur = &contenders[ci];
                let cur_level = if audible(cur) {
                    cur.level_dbfs
                } else {
                    f32::NEG_INFINITY
                };
                self.silent_ticks = if audible(cur) {
                    0
                } else {
                    self.silent_ticks.saturating_add(1)
                };
                for (i, (c, louder)) in contenders.iter().zip(&mut self.louder_ticks).enumerate() {
                    let ahead =
                        i != ci && audible(c) && c.level_dbfs >= cur_level + cfg.switch_margin_db;
                    louder.1 = if ahead { louder.1.saturating_add(1) } else { 0 };
                }
                let challenger = if self.silent_ticks >= switch_ticks {
                    loudest(contenders, |i, c| i != ci && audible(c))
                } else if self.held_ticks >= ticks(cfg.min_hold_ms) {
                    let louder = &self.louder_ticks;
                    loudest(contenders, |i, _| louder[i].1 >= switch_ticks)
                } else {
                    None
                };
                challenger.or(Some(cur.id))
            }
        };

        if next != self.current {
            self.current = next;
            self.held_ticks = 0;
            self.silent_ticks = 0;
            self.louder_ticks.iter_mut().for_each(|l| l.1 = 0);
        }
        self.current != before
    }
}

/// The loudest contender passing `filter` (index, contender); the earliest on ties.
fn loudest(
    contenders: &[Contender],
    filter: impl Fn(usize, &Contender) -> bool,
) -> Option<ParticipantId> {
    let mut best: Option<&Contender> = None;
    for (i, c) in contenders.iter().enumerate() {
        if filter(i, c) && best.is_none_or(|b| c.level_dbfs > b.level_dbfs) {
            best = Some(c);
        }
    }
    best.map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ParticipantId = ParticipantId(1);
    const B: ParticipantId = ParticipantId(2);
    const C: ParticipantId = ParticipantId(3);

    /// A stretch of `ticks` ticks with fixed levels for A, B and C (`None`: muted at -20).
    struct Phase {
        ticks: u32,
        levels: [Option<f32>; 3],
    }

    fn phase(ticks: u32, a: f32, b: f32, c: f32) -> Phase {
        Phase {
            ticks,
            levels: [Some(a), Some(b), Some(c)],
        }
    }

    /// Runs the phases and returns every change as (tick, new speaker), plus the end state.
    fn run(phases: &[Phase]) -> (Vec<(u32, Option<ParticipantId>)>, Option<ParticipantId>) {
        let cfg = SpeakerConfig::default();
        let mut tracker = SpeakerTracker::default();
        let mut changes = Vec::new();
        let mut tick = 0;
        for p in phases {
            let contenders: Vec<Contender> = [A, B, C]
                .iter()
                .zip(p.levels)
                .map(|(&id, level)| Contender {
                    id,
                    level_dbfs: level.unwrap_or(-20.0),
                    muted: level.is_none(),
                })
                .collect();
            for _ in 0..p.ticks {
                if tracker.update(&cfg, &contenders) {
                    changes.push((tick, tracker.current()));
                }
                tick += 1;
            }
        }
        (changes, tracker.current())
    }

    #[test]
    fn speaker_rules() {
        const S: f32 = -120.0; // silence
        let muted_a = |ticks, b, c| Phase {
            ticks,
            levels: [None, Some(b), Some(c)],
        };
        let check = |name: &str, phases: &[Phase], want: &[(u32, Option<ParticipantId>)]| {
            assert_eq!(run(phases).0, want, "{name}");
        };

        check("nobody talks", &[phase(100, S, S, S)], &[]);
        check(
            "quiet talk stays under threshold",
            &[phase(100, -50.0, S, S)],
            &[],
        );
        check(
            "first talker takes the role at once",
            &[phase(5, S, S, S), phase(10, -20.0, S, S)],
            &[(5, Some(A))],
        );
        check(
            "loudest wins a simultaneous start",
            &[phase(10, -30.0, -20.0, -25.0)],
            &[(0, Some(B))],
        );
        check(
            "tie goes to the earlier joiner",
            &[phase(10, -20.0, -20.0, S)],
            &[(0, Some(A))],
        );
        check(
            "louder challenger after hold: 20 ticks",
            &[phase(60, -20.0, S, S), phase(100, -20.0, -10.0, S)],
            &[(0, Some(A)), (79, Some(B))],
        );
        check(
            "louder challenger before hold waits for it",
            &[phase(10, -20.0, S, S), phase(100, -20.0, -10.0, S)],
            &[(0, Some(A)), (50, Some(B))],
        );
        check(
            "under the margin never switches",
            &[phase(60, -20.0, S, S), phase(200, -20.0, -15.0, S)],
            &[(0, Some(A))],
        );
        check(
            "a break restarts the challenge",
            &[
                phase(60, -20.0, S, S),
                phase(19, -20.0, -10.0, S),
                phase(1, -20.0, -20.0, S),
                phase(19, -20.0, -10.0, S),
            ],
            &[(0, Some(A))],
        );
        check(
            "silence keeps the last speaker",
            &[phase(10, -20.0, S, S), phase(500, S, S, S)],
            &[(0, Some(A))],
        );
        check(
            "a silent speaker hands over after 20 ticks, hold or not",
            &[phase(5, -20.0, S, S), phase(100, S, -30.0, S)],
            &[(0, Some(A)), (24, Some(B))],
        );
        check(
            "a muted speaker counts as silent",
            &[phase(60, -20.0, S, S), muted_a(100, -30.0, S)],
            &[(0, Some(A)), (79, Some(B))],
        );
        check(
            "muted participants never take the role",
            &[muted_a(100, S, S)],
            &[],
        );
        check(
            "of two qualifying challengers the louder wins",
            &[phase(60, -30.0, S, S), phase(100, -30.0, -20.0, -10.0)],
            &[(0, Some(A)), (79, Some(C))],
        );
    }

    #[test]
    fn forgetting_the_speaker_clears_then_hands_over() {
        let cfg = SpeakerConfig::default();
        let mut t = SpeakerTracker::default();
        let both = [
            Contender {
                id: A,
                level_dbfs: -20.0,
                muted: false,
            },
            Contender {
                id: B,
                level_dbfs: -30.0,
                muted: false,
            },
        ];
        assert!(t.update(&cfg, &both));
        assert_eq!(t.current(), Some(A));
        t.forget(A);
        assert_eq!(t.current(), None);
        assert!(t.update(&cfg, &both[1..]));
        assert_eq!(t.current(), Some(B));
        t.forget(B);
        assert!(
            !t.update(&cfg, &[]),
            "nobody left: no change after the clear"
        );
        assert_eq!(t.current(), None);
    }
}
