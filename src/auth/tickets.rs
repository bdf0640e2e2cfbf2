//! Stream tickets: the `ticket` in a job's `stream_url`, which lets whoever
//! holds the URL read that one job (`GET` it and its stream), and nothing
//! else. A ticket is the job's id and an HMAC-SHA256 of it, base64url: it
//! names a job, not a principal, so it is made once per job (its URL is part
//! of every published state, at no cost per event) and stays valid as long
//! as the job exists, on every instance that shares the signing key and
//! across restarts. It is never logged: request spans carry the route, not
//! the query.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

use crate::jobs::JobId;

/// Separates tickets' MACs from anything else the key might sign.
const CONTEXT: &[u8] = b"jobcast stream ticket v1\0";
const ID_LEN: usize = 16;
const TAG_LEN: usize = 32;
/// A ticket's length in base64url characters.
const TICKET_LEN: usize = (ID_LEN + TAG_LEN) * 4 / 3;

/// Makes and checks tickets with one key.
pub struct Tickets {
    key: hmac::Key,
}

/// A ticket this server did not make: forged, altered, cut short.
#[derive(Debug, thiserror::Error)]
#[error("the ticket is not valid")]
pub struct BadTicket;

impl Tickets {
    /// Tickets signed with `secret` as the key.
    pub fn with_secret(secret: &[u8]) -> Self {
        Tickets {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Tickets signed with a key derived from `secret`, a secret that also
    /// serves another purpose (the JWT secret).
    pub fn derived_from(secret: &[u8]) -> Self {
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), b"jobcast stream ticket key");
        Self::with_secret(derived.as_ref())
    }

    /// The ticket for job `id`.
    pub fn issue(&self, id: JobId) -> String {
        let id = id.as_bytes();
        let mut ticket = [0u8; ID_LEN + TAG_LEN];
        ticket[..ID_LEN].copy_from_slice(id);
        ticket[ID_LEN..].copy_from_slice(self.tag(id).as_ref());
        URL_SAFE_NO_PAD.encode(ticket)
    }

    /// The job a genuine ticket names.
    pub fn verify(&self, ticket: &str) -> Result<JobId, BadTicket> {
        if ticket.len() != TICKET_LEN {
            return Err(BadTicket);
        }
        let bytes = URL_SAFE_NO_PAD.decode(ticket).map_err(|_| BadTicket)?;
        let (id, tag) = bytes.split_at(ID_LEN);
        let id: [u8; ID_LEN] = id.try_into().map_err(|_| BadTicket)?;
        hmac::verify(&self.key, &signed_message(&id), tag).map_err(|_| BadTicket)?;
        Ok(JobId::from_bytes(id))
    }

    fn tag(&self, id: &[u8; ID_LEN]) -> hmac::Tag {
        hmac::sign(&self.key, &signed_message(id))
    }
}

/// What a ticket's MAC covers: the context, then the job's id.
fn signed_message(id: &[u8; ID_LEN]) -> [u8; CONTEXT.len() + ID_LEN] {
    let mut message = [0u8; CONTEXT.len() + ID_LEN];
    message[..CONTEXT.len()].copy_from_slice(CONTEXT);
    message[CONTEXT.len()..].copy_from_slice(id);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_names_its_job_and_only_this_key_makes_it() {
        let tickets = Tickets::with_secret(b"0123456789abcdef0123456789abcdef");
        let id = JobId::generate();
        let ticket = tickets.issue(id);
        assert_eq!(ticket.len(), TICKET_LEN);
        assert_eq!(tickets.verify(&ticket).unwrap(), id);
        let other_key = Tickets::with_secret(b"fedcba9876543210fedcba9876543210");
        assert!(other_key.verify(&ticket).is_err());
        assert_eq!(
            Tickets::with_secret(b"0123456789abcdef0123456789abcdef")
                .verify(&ticket)
                .unwrap(),
            id
        );
    }

    #[test]
    fn altered_cut_or_garbled_tickets_are_refused() {
        let tickets = Tickets::derived_from(b"a jwt secret of thirty-two bytes");
        let ticket = tickets.issue(JobId::generate());
        let mut altered = ticket.clone().into_bytes();
        for index in [0, 10, 30, TICKET_LEN - 1] {
            altered[index] = if altered[index] == b'A' { b'B' } else { b'A' };
            assert!(
                tickets.verify(std::str::from_utf8(&altered).unwrap()).is_err(),
                "{index}"
            );
        }
        for bad in [
            "",
            &ticket[..TICKET_LEN - 1],
            &format!("{ticket}A"),
            &"!".repeat(TICKET_LEN),
            "é",
        ] {
            assert!(tickets.verify(bad).is_err(), "{bad}");
        }
    }
}
