//! The RFC 4271 §8 finite state machine, pure: `(state, event) -> (state, actions)`.
//!
//! The session task turns I/O and timers into [`FsmEvent`]s and carries out the
//! [`Action`]s; everything about *when* to send what lives here and is unit tested.
//! Simplifications: one connection at a time (the session resolves collisions before
//! feeding events), no DelayOpen, and the idle hold / back-off is the session's.

use super::codec::{Notification, code, fsm_sub};
use super::event::DownReason;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsmEvent {
    /// ManualStart / AutomaticStart (after the back-off).
    Start,
    /// ManualStop: send this Cease (if connected) and stay down.
    Stop(Notification),
    ConnectRetryTimerExpires,
    HoldTimerExpires,
    KeepaliveTimerExpires,
    /// Our connection attempt succeeded, or we accepted the peer's.
    TcpConnected,
    /// Connecting failed, or the connection closed / errored.
    TcpFails(String),
    /// A valid OPEN that negotiation accepted, with the negotiated hold time (s).
    OpenReceived {
        hold_time: u16,
    },
    KeepaliveReceived,
    UpdateReceived,
    RouteRefreshReceived,
    NotificationReceived(Notification),
    /// We found an error (header, OPEN, UPDATE, negotiation): send this and close.
    ProtocolError(Notification),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a TCP connection to the peer.
    Connect,
    StartConnectRetryTimer,
    StopConnectRetryTimer,
    SendOpen,
    SendKeepalive,
    SendNotification(Notification),
    /// (Re)arm the hold timer for this many seconds; 0 stops it.
    SetHoldTimer(u16),
    /// (Re)arm the keepalive timer for this many seconds; 0 stops it.
    SetKeepaliveTimer(u16),
    /// Close the TCP connection (after sending what is queued).
    CloseConnection,
    /// The session is up: announce our routes, emit `Event::Established`.
    Established,
    /// The session left a connected state; `was_established` says whether routes must
    /// be flushed. `restart` says whether to try again (after the back-off).
    Down {
        reason: DownReason,
        was_established: bool,
        restart: bool,
    },
}

/// Keepalive interval (s) for a negotiated hold time: the configured one, but at most a
/// third of the hold time (RFC 4271 §4.4); a configured 0 means "hold / 3"; 0 when the
/// hold time is 0 (no keepalives at all).
pub fn keepalive_interval(configured: u16, hold_time: u16) -> u16 {
    if hold_time == 0 {
        return 0;
    }
    let third = hold_time / 3;
    let ka = if configured == 0 {
        third
    } else {
        configured.min(third)
    };
    ka.max(1)
}

/// RFC 4271 §8.2.2: the large hold time used until the OPEN is received.
pub const OPEN_HOLD_TIME: u16 = 240;

#[derive(Clone, Debug)]
pub struct Fsm {
    state: State,
    /// Connect out (Active mode) or only wait (Passive).
    connect_out: bool,
    /// Configured keepalive (s); the effective one is min(this, hold / 3).
    keepalive_cfg: u16,
    hold_time: u16,
}

impl Fsm {
    pub fn new(connect_out: bool, keepalive_cfg: u16) -> Fsm {
        Fsm {
            state: State::Idle,
            connect_out,
            keepalive_cfg,
            hold_time: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Negotiated hold time (valid from OpenConfirm on).
    pub fn hold_time(&self) -> u16 {
        self.hold_time
    }

    /// Effective keepalive interval for a negotiated hold time.
    pub fn keepalive_for(&self, hold_time: u16) -> u16 {
        keepalive_interval(self.keepalive_cfg, hold_time)
    }

    pub fn handle(&mut self, event: FsmEvent) -> Vec<Action> {
        use Action as A;
        use FsmEvent as E;
        use State as S;
        let was_established = self.state == S::Established;
        // Leaving a connected state with a failure: close, report, and restart later.
        let fail = |reason: DownReason, notify: Option<Notification>| {
            let mut v = Vec::new();
            if let Some(n) = notify {
                v.push(A::SendNotification(n));
            }
            v.extend([
                A::SetHoldTimer(0),
                A::SetKeepaliveTimer(0),
                A::StopConnectRetryTimer,
                A::CloseConnection,
                A::Down {
                    reason,
                    was_established,
                    restart: true,
                },
            ]);
            v
        };
        let (next, actions) = match (self.state, event) {
            (S::Idle, E::Start) if self.connect_out => {
                (S::Connect, vec![A::Connect, A::StartConnectRetryTimer])
            }
            (S::Idle, E::Start) => (S::Active, vec![A::StartConnectRetryTimer]),
            (S::Idle, _) => (S::Idle, vec![]),

            (S::Connect | S::Active, E::TcpConnected) => (
                S::OpenSent,
                vec![
                    A::StopConnectRetryTimer,
                    A::SendOpen,
                    A::SetHoldTimer(OPEN_HOLD_TIME),
                ],
            ),
            (S::Connect, E::TcpFails(_)) => (S::Active, vec![A::StartConnectRetryTimer]),
            (S::Connect | S::Active, E::ConnectRetryTimerExpires) if self.connect_out => {
                (S::Connect, vec![A::Connect, A::StartConnectRetryTimer])
            }
            (S::Active, E::ConnectRetryTimerExpires) => {
                (S::Active, vec![A::StartConnectRetryTimer])
            }
            (S::Active, E::TcpFails(_)) => (S::Active, vec![]),
            (S::Connect | S::Active, E::Stop(_)) => (
                S::Idle,
                vec![
                    A::StopConnectRetryTimer,
                    A::CloseConnection,
                    A::Down {
                        reason: DownReason::Shutdown,
                        was_established,
                        restart: false,
                    },
                ],
            ),
            (S::Connect | S::Active, E::Start) => (self.state, vec![]),
            // Nothing else can happen without a connection; stay put.
            (S::Connect | S::Active, _) => (self.state, vec![]),

            // From here on a connection exists.
            (_, E::Start) => (self.state, vec![]),
            (_, E::Stop(n)) => {
                let mut v = fail(DownReason::Shutdown, Some(n));
                if let Some(A::Down { restart, .. }) = v.last_mut() {
                    *restart = false;
                }
                (S::Idle, v)
            }
            (_, E::HoldTimerExpires) => {
                let n = Notification::hold_timer_expired();
                (
                    S::Idle,
                    fail(DownReason::NotificationSent(n.clone()), Some(n)),
                )
            }
            (_, E::TcpFails(e)) => (S::Idle, fail(DownReason::ConnectionLost(e), None)),
            (_, E::NotificationReceived(n)) => {
                (S::Idle, fail(DownReason::NotificationReceived(n), None))
            }
            (_, E::ProtocolError(n)) => (
                S::Idle,
                fail(DownReason::NotificationSent(n.clone()), Some(n)),
            ),
            (_, E::ConnectRetryTimerExpires) => (self.state, vec![]),

            (S::OpenSent, E::OpenReceived { hold_time }) => {
                self.hold_time = hold_time;
                let ka = self.keepalive_for(hold_time);
                (
                    S::OpenConfirm,
                    vec![
                        A::SendKeepalive,
                        A::SetHoldTimer(hold_time),
                        A::SetKeepaliveTimer(ka),
                    ],
                )
            }
            (S::OpenConfirm, E::KeepaliveReceived) => (
                S::Established,
                vec![A::SetHoldTimer(self.hold_time), A::Established],
            ),
            (S::OpenConfirm | S::Established, E::KeepaliveTimerExpires) => {
                let ka = self.keepalive_for(self.hold_time);
                (self.state, vec![A::SendKeepalive, A::SetKeepaliveTimer(ka)])
            }
            (
                S::Established,
                E::KeepaliveReceived | E::UpdateReceived | E::RouteRefreshReceived,
            ) => (S::Established, vec![A::SetHoldTimer(self.hold_time)]),
            (S::OpenSent, E::KeepaliveTimerExpires) => (S::OpenSent, vec![]),
            // Any other message is out of order (RFC 6608 subcodes).
            (state, _) => {
                let sub = match state {
                    S::OpenSent => fsm_sub::UNEXPECTED_IN_OPENSENT,
                    S::OpenConfirm => fsm_sub::UNEXPECTED_IN_OPENCONFIRM,
                    _ => fsm_sub::UNEXPECTED_IN_ESTABLISHED,
                };
                let n = Notification::new(code::FSM, sub, Vec::new());
                (
                    S::Idle,
                    fail(DownReason::NotificationSent(n.clone()), Some(n)),
                )
            }
        };
        self.state = next;
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::codec::cease_sub;

    fn established(fsm: &mut Fsm) {
        fsm.handle(FsmEvent::Start);
        fsm.handle(FsmEvent::TcpConnected);
        fsm.handle(FsmEvent::OpenReceived { hold_time: 90 });
        let a = fsm.handle(FsmEvent::KeepaliveReceived);
        assert!(a.contains(&Action::Established));
        assert_eq!(fsm.state(), State::Established);
    }

    #[test]
    fn active_open_to_established() {
        let mut fsm = Fsm::new(true, 60);
        assert_eq!(
            fsm.handle(FsmEvent::Start),
            vec![Action::Connect, Action::StartConnectRetryTimer]
        );
        assert_eq!(fsm.state(), State::Connect);
        let a = fsm.handle(FsmEvent::TcpConnected);
        assert_eq!(
            a,
            vec![
                Action::StopConnectRetryTimer,
                Action::SendOpen,
                Action::SetHoldTimer(240)
            ]
        );
        assert_eq!(fsm.state(), State::OpenSent);
        // Route server timers: we propose 180/60, the peer 90: hold 90, keepalive 30.
        let a = fsm.handle(FsmEvent::OpenReceived { hold_time: 90 });
        assert_eq!(
            a,
            vec![
                Action::SendKeepalive,
                Action::SetHoldTimer(90),
                Action::SetKeepaliveTimer(30)
            ]
        );
        assert_eq!(fsm.state(), State::OpenConfirm);
        let a = fsm.handle(FsmEvent::KeepaliveReceived);
        assert_eq!(a, vec![Action::SetHoldTimer(90), Action::Established]);
        assert_eq!(
            fsm.handle(FsmEvent::UpdateReceived),
            vec![Action::SetHoldTimer(90)]
        );
        assert_eq!(
            fsm.handle(FsmEvent::KeepaliveTimerExpires),
            vec![Action::SendKeepalive, Action::SetKeepaliveTimer(30)]
        );
    }

    #[test]
    fn keepalive_interval() {
        let fsm = Fsm::new(true, 60);
        assert_eq!(fsm.keepalive_for(180), 60);
        assert_eq!(fsm.keepalive_for(90), 30);
        assert_eq!(fsm.keepalive_for(3), 1);
        assert_eq!(fsm.keepalive_for(0), 0);
        assert_eq!(super::keepalive_interval(0, 90), 30);
    }

    #[test]
    fn passive_waits_in_active() {
        let mut fsm = Fsm::new(false, 30);
        assert_eq!(
            fsm.handle(FsmEvent::Start),
            vec![Action::StartConnectRetryTimer]
        );
        assert_eq!(fsm.state(), State::Active);
        assert_eq!(
            fsm.handle(FsmEvent::ConnectRetryTimerExpires),
            vec![Action::StartConnectRetryTimer]
        );
        assert_eq!(fsm.state(), State::Active);
        fsm.handle(FsmEvent::TcpConnected);
        assert_eq!(fsm.state(), State::OpenSent);
    }

    #[test]
    fn connect_failure_then_retry() {
        let mut fsm = Fsm::new(true, 30);
        fsm.handle(FsmEvent::Start);
        assert_eq!(
            fsm.handle(FsmEvent::TcpFails("refused".into())),
            vec![Action::StartConnectRetryTimer]
        );
        assert_eq!(fsm.state(), State::Active);
        assert_eq!(
            fsm.handle(FsmEvent::ConnectRetryTimerExpires),
            vec![Action::Connect, Action::StartConnectRetryTimer]
        );
        assert_eq!(fsm.state(), State::Connect);
    }

    #[test]
    fn hold_timer_expiry_sends_4_0() {
        let mut fsm = Fsm::new(true, 30);
        established(&mut fsm);
        let a = fsm.handle(FsmEvent::HoldTimerExpires);
        let n = Notification::hold_timer_expired();
        assert_eq!(a[0], Action::SendNotification(n.clone()));
        assert!(a.contains(&Action::CloseConnection));
        assert_eq!(
            a.last(),
            Some(&Action::Down {
                reason: DownReason::NotificationSent(n),
                was_established: true,
                restart: true
            })
        );
        assert_eq!(fsm.state(), State::Idle);
    }

    #[test]
    fn hold_timer_in_opensent() {
        let mut fsm = Fsm::new(true, 30);
        fsm.handle(FsmEvent::Start);
        fsm.handle(FsmEvent::TcpConnected);
        let a = fsm.handle(FsmEvent::HoldTimerExpires);
        assert_eq!(
            a[0],
            Action::SendNotification(Notification::hold_timer_expired())
        );
        assert!(matches!(
            a.last(),
            Some(Action::Down {
                was_established: false,
                ..
            })
        ));
    }

    #[test]
    fn unexpected_messages_are_fsm_errors() {
        let mut fsm = Fsm::new(true, 30);
        fsm.handle(FsmEvent::Start);
        fsm.handle(FsmEvent::TcpConnected);
        let a = fsm.handle(FsmEvent::UpdateReceived);
        assert_eq!(
            a[0],
            Action::SendNotification(Notification::new(5, 1, vec![]))
        );

        let mut fsm = Fsm::new(true, 30);
        fsm.handle(FsmEvent::Start);
        fsm.handle(FsmEvent::TcpConnected);
        fsm.handle(FsmEvent::OpenReceived { hold_time: 0 });
        let a = fsm.handle(FsmEvent::UpdateReceived);
        assert_eq!(
            a[0],
            Action::SendNotification(Notification::new(5, 2, vec![]))
        );

        let mut fsm = Fsm::new(true, 30);
        established(&mut fsm);
        let a = fsm.handle(FsmEvent::OpenReceived { hold_time: 90 });
        assert_eq!(
            a[0],
            Action::SendNotification(Notification::new(5, 3, vec![]))
        );
    }

    #[test]
    fn notification_and_errors_go_idle() {
        let mut fsm = Fsm::new(true, 30);
        established(&mut fsm);
        let cease = Notification::cease(cease_sub::ADMIN_SHUTDOWN);
        let a = fsm.handle(FsmEvent::NotificationReceived(cease.clone()));
        assert!(!a.iter().any(|a| matches!(a, Action::SendNotification(_))));
        assert!(a.contains(&Action::Down {
            reason: DownReason::NotificationReceived(cease),
            was_established: true,
            restart: true
        }));

        let mut fsm = Fsm::new(true, 30);
        established(&mut fsm);
        let err = Notification::new(3, 1, vec![]);
        let a = fsm.handle(FsmEvent::ProtocolError(err.clone()));
        assert_eq!(a[0], Action::SendNotification(err));
        assert_eq!(fsm.state(), State::Idle);
        // Idle ignores everything but Start.
        assert!(fsm.handle(FsmEvent::KeepaliveReceived).is_empty());
        assert_eq!(fsm.handle(FsmEvent::Start)[0], Action::Connect);
    }

    #[test]
    fn stop_sends_cease_and_does_not_restart() {
        let mut fsm = Fsm::new(true, 30);
        established(&mut fsm);
        let cease = Notification::admin_shutdown("bye");
        let a = fsm.handle(FsmEvent::Stop(cease.clone()));
        assert_eq!(a[0], Action::SendNotification(cease));
        assert!(matches!(
            a.last(),
            Some(Action::Down {
                restart: false,
                was_established: true,
                ..
            })
        ));

        let mut fsm = Fsm::new(true, 30);
        fsm.handle(FsmEvent::Start);
        let a = fsm.handle(FsmEvent::Stop(Notification::cease(2)));
        assert!(matches!(
            a.last(),
            Some(Action::Down {
                restart: false,
                was_established: false,
                ..
            })
        ));
        assert_eq!(fsm.state(), State::Idle);
    }

    #[test]
    fn tcp_loss_in_established() {
        let mut fsm = Fsm::new(true, 30);
        established(&mut fsm);
        let a = fsm.handle(FsmEvent::TcpFails("reset".into()));
        assert!(!a.iter().any(|a| matches!(a, Action::SendNotification(_))));
        assert!(matches!(
            a.last(),
            Some(Action::Down {
                reason: DownReason::ConnectionLost(_),
                was_established: true,
                ..
            })
        ));
    }
}
