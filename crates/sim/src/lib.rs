//! Double Eleven, generated: the shape of 2013's day ([`day`]) and a
//! deterministic stream of what buyers, merchants and the platform's clock do
//! through it ([`workload`]).
//!
//! The workload knows nothing of the platform: it names buyers and merchants
//! by index and trades by the simulation's own serial, and the driver maps
//! them onto commands (in process) or requests (over HTTP). The same seed and
//! scale give the same stream, operation for operation.
//!
//! [`vopr`] is the other simulator: every product at once, through the real
//! journal and platform, with crashes and restarts, checked after every step.

pub mod day;
mod queue;
pub mod vopr;
pub mod workload;

pub use day::{DAY_NANOS, DAY_SECONDS, DayCurve, MILESTONES_2013, Milestone};
pub use workload::{Mode, Op, Payment, Plan, RefundShare, SimConfig, TimedOp, Workload};
