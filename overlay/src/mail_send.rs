//! One send of mail to a mailbox's holders: which holder is asked for which message next,
//! and when the send is answered.
//!
//! A send places each of its messages at the mailbox's RF closest (the driver picks them:
//! [`placement_targets`](crate::placement_targets), our own copy counted only where a
//! holder's would be, [`Admission::holds_mailbox`](crate::Admission::holds_mailbox)). Each
//! holder is sent the messages one after another, in order, one in flight at a time. A
//! holder that fails once (silence, an answer that is no answer, "not a holder") is asked
//! for none of the rest: they would wait out the same failure one by one. Any other refusal
//! carries advice for the client (a quota, a size, a store full, unavailable): the first
//! is kept, and the holder goes on.
//!
//! The send is acknowledged once every message has W copies, ours counted; it is over
//! short when no holder is left to ask, or when the driver's wait runs out, with the first
//! refusal's advice if there was one. Copies are counted per message: the send needs the
//! least-placed message to reach W. A send of no message places nothing and is short (the
//! gateway refuses an empty batch before it gets here).

/// A holder's answer to one message, as the driver read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailAnswer<R> {
    /// Stored (`duplicate` when it held the message already).
    Stored {
        /// It held the message already.
        duplicate: bool,
    },
    /// Refused with advice for the client (a quota, a size, a store full, unavailable): no
    /// copy, the holder goes on.
    Refused(R),
    /// No copy and no advice (silence, a broken answer, not a holder): the holder is asked
    /// no more.
    Failed,
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailSent<R> {
    /// Every message has W copies: for each, its copies and whether every copy was one its
    /// holder had already.
    Acknowledged(Vec<(usize, bool)>),
    /// Some message is short of W.
    Short {
        /// Copies of the least-placed message.
        least: usize,
        /// Copies wanted.
        want: usize,
        /// The first refusal with advice, if any.
        advice: Option<R>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// The next message to send it.
    Next(usize),
    /// Message `i` is with it now.
    Asked(usize),
    /// Asked for nothing more.
    Stopped,
}

/// The state of one send.
#[derive(Debug, Clone)]
pub struct MailSend<R> {
    want: usize,
    copies: Vec<usize>,
    duplicate: Vec<bool>,
    advice: Option<R>,
    holders: Vec<Holder>,
}

impl<R> MailSend<R> {
    /// A send of `messages` messages to `holders` holders (the driver's indices), each
    /// message wanting `want` copies.
    pub fn new(messages: usize, holders: usize, want: usize) -> Self {
        let first = if messages == 0 {
            Holder::Stopped
        } else {
            Holder::Next(0)
        };
        MailSend {
            want,
            copies: vec![0; messages],
            duplicate: vec![true; messages],
            advice: None,
            holders: vec![first; holders],
        }
    }

    /// Our own copy of `message` is stored.
    pub fn handle_local(&mut self, message: usize, duplicate: bool) {
        self.count(message, duplicate);
    }

    /// The next message to send to a holder, as (holder, message); `None` when every
    /// holder that may be asked has one in flight, or the send is over.
    pub fn poll_send(&mut self) -> Option<(usize, usize)> {
        if self.is_over() {
            return None;
        }
        let (h, state) = self
            .holders
            .iter_mut()
            .enumerate()
            .find(|(_, s)| matches!(s, Holder::Next(_)))?;
        let Holder::Next(i) = *state else {
            return None;
        };
        *state = Holder::Asked(i);
        Some((h, i))
    }

    /// Holder `holder` answered the message it was asked for. An answer for anything else
    /// changes nothing.
    pub fn handle_answer(&mut self, holder: usize, message: usize, answer: MailAnswer<R>) {
        let Some(state) = self.holders.get_mut(holder) else {
            return;
        };
        if *state != Holder::Asked(message) {
            return;
        }
        let next = message + 1;
        *state = if next < self.copies.len() {
            Holder::Next(next)
        } else {
            Holder::Stopped
        };
        match answer {
            MailAnswer::Stored { duplicate } => self.count(message, duplicate),
            MailAnswer::Refused(advice) => {
                self.advice.get_or_insert(advice);
            }
            MailAnswer::Failed => self.holders[holder] = Holder::Stopped,
        }
    }

    /// Whether the send is over: every message has W copies, or no holder is left to
    /// ask or to answer.
    pub fn is_over(&self) -> bool {
        self.least() >= self.want || self.holders.iter().all(|s| *s == Holder::Stopped)
    }

    /// How the send ended (or stands, when the driver's wait ran out).
    pub fn outcome(self) -> MailSent<R> {
        let least = self.least();
        if least >= self.want {
            let copies = self.copies.iter().zip(&self.duplicate);
            MailSent::Acknowledged(copies.map(|(&c, &d)| (c, d && c > 0)).collect())
        } else {
            MailSent::Short {
                least,
                want: self.want,
                advice: self.advice,
            }
        }
    }

    fn least(&self) -> usize {
        self.copies.iter().copied().min().unwrap_or(0)
    }

    fn count(&mut self, message: usize, duplicate: bool) {
        if let (Some(c), Some(d)) = (
            self.copies.get_mut(message),
            self.duplicate.get_mut(message),
        ) {
            *c += 1;
            *d &= duplicate;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED: MailAnswer<&str> = MailAnswer::Stored { duplicate: false };

    #[test]
    fn each_holder_gets_the_messages_in_order_one_at_a_time() {
        let mut s: MailSend<&str> = MailSend::new(2, 2, 2);
        assert_eq!(s.poll_send(), Some((0, 0)));
        assert_eq!(s.poll_send(), Some((1, 0)));
        assert_eq!(s.poll_send(), None, "one in flight per holder");
        s.handle_answer(1, 0, STORED);
        assert_eq!(s.poll_send(), Some((1, 1)));
        s.handle_answer(0, 0, STORED);
        s.handle_answer(1, 1, STORED);
        assert_eq!(s.poll_send(), Some((0, 1)));
        assert!(!s.is_over());
        s.handle_answer(0, 1, MailAnswer::Stored { duplicate: true });
        assert!(s.is_over());
        assert_eq!(
            s.outcome(),
            MailSent::Acknowledged(vec![(2, false), (2, false)])
        );
    }

    #[test]
    fn a_holder_that_fails_once_is_asked_no_more_and_a_short_send_keeps_the_advice() {
        let mut s: MailSend<&str> = MailSend::new(3, 2, 2);
        s.handle_local(0, false);
        s.handle_local(1, false);
        s.handle_local(2, false);
        assert_eq!(s.poll_send(), Some((0, 0)));
        assert_eq!(s.poll_send(), Some((1, 0)));
        s.handle_answer(0, 0, MailAnswer::Failed);
        s.handle_answer(1, 0, MailAnswer::Refused("quota"));
        assert_eq!(s.poll_send(), Some((1, 1)), "a refusal with advice goes on");
        assert_eq!(s.poll_send(), None, "the failed holder is asked no more");
        s.handle_answer(1, 1, MailAnswer::Refused("size"));
        assert_eq!(s.poll_send(), Some((1, 2)));
        s.handle_answer(1, 2, STORED);
        assert!(s.is_over(), "nobody left to ask");
        assert_eq!(
            s.outcome(),
            MailSent::Short {
                least: 1,
                want: 2,
                advice: Some("quota")
            }
        );
    }

    #[test]
    fn our_own_copies_count_and_a_met_send_asks_no_more() {
        let mut s: MailSend<&str> = MailSend::new(1, 3, 2);
        s.handle_local(0, true);
        assert_eq!(s.poll_send(), Some((0, 0)));
        s.handle_answer(0, 0, MailAnswer::Stored { duplicate: true });
        assert!(s.is_over());
        assert_eq!(s.poll_send(), None);
        assert_eq!(s.outcome(), MailSent::Acknowledged(vec![(2, true)]));
    }

    #[test]
    fn answers_out_of_turn_change_nothing() {
        let mut s: MailSend<&str> = MailSend::new(2, 1, 1);
        s.handle_answer(0, 0, STORED);
        s.handle_answer(5, 0, STORED);
        assert_eq!(s.poll_send(), Some((0, 0)));
        s.handle_answer(0, 1, STORED);
        assert!(!s.is_over());
        // No holders and no messages: over at once.
        assert!(MailSend::<&str>::new(0, 0, 1).is_over());
        assert!(MailSend::<&str>::new(1, 0, 1).is_over());
    }

    #[test]
    fn a_refusal_then_enough_copies_is_acknowledged_and_a_late_failure_stops_a_holder() {
        let mut s: MailSend<&str> = MailSend::new(2, 3, 2);
        for _ in 0..3 {
            assert!(s.poll_send().is_some());
        }
        s.handle_answer(0, 0, MailAnswer::Refused("quota"));
        s.handle_answer(1, 0, STORED);
        s.handle_answer(2, 0, STORED);
        // Holder 1 fails on its second message: asked no more; 0 and 2 go on.
        let next: Vec<_> = std::iter::from_fn(|| s.poll_send()).collect();
        assert_eq!(next, vec![(0, 1), (1, 1), (2, 1)]);
        s.handle_answer(1, 1, MailAnswer::Failed);
        assert_eq!(s.poll_send(), None);
        s.handle_answer(0, 1, STORED);
        assert!(!s.is_over(), "message 1 has one copy");
        s.handle_answer(2, 1, MailAnswer::Stored { duplicate: true });
        assert!(s.is_over());
        assert_eq!(
            s.outcome(),
            MailSent::Acknowledged(vec![(2, false), (2, false)]),
            "the refusal's advice is for a short send only"
        );
    }

    #[test]
    fn a_send_cut_at_its_wait_is_short_and_a_send_of_nothing_places_nothing() {
        let mut s: MailSend<&str> = MailSend::new(1, 2, 2);
        assert!(s.poll_send().is_some() && s.poll_send().is_some());
        s.handle_answer(0, 0, STORED);
        // The driver's wait ran out with holder 1 silent.
        assert!(!s.is_over());
        assert_eq!(
            s.outcome(),
            MailSent::Short {
                least: 1,
                want: 2,
                advice: None
            }
        );
        let empty: MailSend<&str> = MailSend::new(0, 3, 1);
        assert!(empty.is_over());
        assert_eq!(
            empty.outcome(),
            MailSent::Short {
                least: 0,
                want: 1,
                advice: None
            }
        );
    }
}
