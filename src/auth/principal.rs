//! Who a request is, and what that lets it see and do: the one place the
//! roles' rules are written. The rest of the code asks an [`Access`].

use std::sync::Arc;

use serde::Deserialize;

use crate::jobs::JobId;
use crate::published::Published;

/// What a principal may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees and acts on its own jobs only.
    User,
    /// Sees every job and may create jobs on behalf of an owner.
    Service,
    /// Everything, including `/metrics`.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Service => "service",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated caller: an API key's or a JWT's subject, and its role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub subject: Arc<str>,
    pub role: Role,
}

/// How a request was let in; handlers ask it what the request may see and do.
#[derive(Clone, Debug)]
pub enum Access {
    /// Authentication is off: everything is allowed, and jobs have no owner.
    Open,
    /// A principal, by a bearer credential or the session cookie.
    Principal(Principal),
    /// A stream ticket: reading this one job, nothing else.
    Ticket(JobId),
}

impl Access {
    /// Whether the request may see `job` at all; a job it may not see is
    /// answered as one that does not exist.
    pub fn may_see(&self, job: &Published) -> bool {
        match self {
            Access::Open => true,
            Access::Principal(principal) => match principal.role {
                Role::User => job.owner.as_deref() == Some(&*principal.subject),
                Role::Service | Role::Admin => true,
            },
            Access::Ticket(id) => *id == job.job_id,
        }
    }

    /// The only owner whose jobs a listing or the all-jobs stream may show,
    /// when the request is limited to one.
    pub fn only_owner(&self) -> Option<&Arc<str>> {
        match self {
            Access::Principal(Principal {
                subject,
                role: Role::User,
            }) => Some(subject),
            _ => None,
        }
    }

    /// The subject that acts: a job's owner when it creates one, the
    /// `cancelled_by` of a cancel. None when authentication is off.
    pub fn subject(&self) -> Option<&Arc<str>> {
        match self {
            Access::Principal(principal) => Some(&principal.subject),
            Access::Open | Access::Ticket(_) => None,
        }
    }

    /// Whether the request may name another owner for a job it creates.
    pub fn may_act_for_others(&self) -> bool {
        match self {
            Access::Open => true,
            Access::Principal(principal) => principal.role != Role::User,
            Access::Ticket(_) => false,
        }
    }

    /// Whether the request may read the service's metrics.
    pub fn is_admin(&self) -> bool {
        match self {
            Access::Open => true,
            Access::Principal(principal) => principal.role == Role::Admin,
            Access::Ticket(_) => false,
        }
    }
}
