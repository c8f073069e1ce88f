//! job state: each job with its history of orders, and the order -> job index.

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::{Address, Amount, Hash32, Height};

use super::msg::JobSpec;
use crate::store::{key, Overlay};

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum JobState {
    /// On the market: an open auction or waiting to be matched.
    Queued { order: u64 },
    /// A provider holds the lease and runs the job.
    Leased { lease: u64, provider: Address, since: Height },
    Succeeded { result: Hash32, size: u64, provider: Address, lease: u64, at: Height },
    Failed { reason: String, at: Height },
    Cancelled { at: Height },
}

impl JobState {
    pub fn is_final(&self) -> bool {
        matches!(self, JobState::Succeeded { .. } | JobState::Failed { .. } | JobState::Cancelled { .. })
    }

    pub fn label(&self) -> &'static str {
        match self {
            JobState::Queued { .. } => "queued",
            JobState::Leased { .. } => "leased",
            JobState::Succeeded { .. } => "succeeded",
            JobState::Failed { .. } => "failed",
            JobState::Cancelled { .. } => "cancelled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Job {
    pub id: u64,
    pub buyer: Address,
    pub spec: JobSpec,
    pub created_at: Height,
    pub state: JobState,
    /// Every order placed for this job, oldest first (more than one after re-placement).
    pub orders: Vec<u64>,
    /// Providers that lost or abandoned this job, in order.
    pub lost_to: Vec<Address>,
    /// What the buyer paid providers for this job, after claw-backs.
    pub paid: Amount,
}

const NEXT_JOB_KEY: &str = "jobs/next";
const JOB_PREFIX: &str = "jobs/job/";
const BY_ORDER_PREFIX: &str = "jobs/order/";

pub fn next_job_id(st: &mut Overlay) -> u64 {
    st.next_counter(NEXT_JOB_KEY)
}

pub fn job(st: &Overlay, id: u64) -> Option<Job> {
    st.get_obj(&key(JOB_PREFIX, &[&id.to_be_bytes()]))
}

pub fn put_job(st: &mut Overlay, j: &Job) {
    st.put_obj(key(JOB_PREFIX, &[&j.id.to_be_bytes()]), j);
}

pub fn all_jobs(st: &Overlay) -> Vec<Job> {
    st.scan_objs::<Job>(JOB_PREFIX.as_bytes()).into_iter().map(|(_, j)| j).collect()
}

pub fn link_order(st: &mut Overlay, order: u64, job: u64) {
    st.put_obj(key(BY_ORDER_PREFIX, &[&order.to_be_bytes()]), &job);
}

/// The job an order was placed for, if any.
pub fn job_of_order(st: &Overlay, order: u64) -> Option<u64> {
    st.get_obj(&key(BY_ORDER_PREFIX, &[&order.to_be_bytes()]))
}
