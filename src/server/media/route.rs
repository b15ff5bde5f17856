//! The routing table: which viewer sessions receive which publisher's tracks.
//!
//! Sessions are routed by stage group, which is their channel (each session is admitted with
//! the channel of its token's stage). A publisher's audio and video tracks go to the matching
//! m-line of every viewer in its group, and to no one else. Each group has its own publisher
//! slot and its own liveness; a frame is written once per viewer of its own group, whatever
//! the number of groups.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::domain::ChannelId;
use crate::server::backend::LivePublisher;

/// A media session's resource id (the last segment of its WHIP/WHEP URL).
pub(crate) type SessionId = Arc<str>;

/// A stage group: every stage of one channel (its master and the stages auto-scaling adds),
/// whose viewers all receive that channel's publisher.
pub(crate) type RouteKey = ChannelId;

/// One group's route: its publisher, the viewers its tracks go to, and what is known of its
/// liveness.
#[derive(Debug, Default)]
pub(crate) struct Route {
    pub(crate) publisher: Option<SessionId>,
    /// In the order they joined.
    pub(crate) viewers: Vec<SessionId>,
    /// When the publisher's media last arrived (kept across a reconnect of the same user).
    pub(crate) last_media: Option<Instant>,
    /// What was last reported about this group's publisher.
    pub(crate) announced: Option<LivePublisher>,
}

impl Route {
    fn is_idle(&self) -> bool {
        self.publisher.is_none() && self.viewers.is_empty() && self.last_media.is_none() && self.announced.is_none()
    }
}

/// Every group that has a session, or a publisher whose going offline is still to be reported.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    groups: HashMap<RouteKey, Route>,
}

impl Routes {
    pub(crate) fn get(&self, group: &RouteKey) -> Option<&Route> {
        self.groups.get(group)
    }

    pub(crate) fn get_mut(&mut self, group: &RouteKey) -> Option<&mut Route> {
        self.groups.get_mut(group)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&RouteKey, &mut Route)> {
        self.groups.iter_mut()
    }

    /// The group's publisher, if it has one.
    pub(crate) fn publisher(&self, group: &RouteKey) -> Option<&SessionId> {
        self.groups.get(group)?.publisher.as_ref()
    }

    /// Makes `id` the group's publisher; returns the one it replaces.
    pub(crate) fn set_publisher(&mut self, group: &RouteKey, id: SessionId) -> Option<SessionId> {
        self.groups.entry(group.clone()).or_default().publisher.replace(id)
    }

    pub(crate) fn add_viewer(&mut self, group: &RouteKey, id: SessionId) {
        self.groups.entry(group.clone()).or_default().viewers.push(id);
    }

    /// Takes a session out of its group, as publisher or viewer.
    pub(crate) fn remove(&mut self, group: &RouteKey, id: &str) {
        let Some(route) = self.groups.get_mut(group) else { return };
        if route.publisher.as_deref() == Some(id) {
            route.publisher = None;
        }
        route.viewers.retain(|v| &**v != id);
    }

    /// Forgets groups with nothing left in them.
    pub(crate) fn prune(&mut self) {
        self.groups.retain(|_, r| !r.is_idle());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> RouteKey {
        ChannelId::parse(k).unwrap()
    }

    #[test]
    fn a_session_leaves_only_its_own_group() {
        let mut routes = Routes::default();
        let (a, b) = (key("a"), key("b"));
        assert_eq!(routes.set_publisher(&a, "p".into()), None);
        routes.add_viewer(&a, "v1".into());
        routes.add_viewer(&a, "v2".into());
        routes.add_viewer(&b, "v3".into());
        assert_eq!(routes.set_publisher(&a, "p2".into()).as_deref(), Some("p"));

        routes.remove(&b, "v1");
        assert_eq!(routes.get(&a).unwrap().viewers.len(), 2);
        routes.remove(&a, "v1");
        routes.remove(&a, "p2");
        let route = routes.get(&a).unwrap();
        assert_eq!(route.viewers.iter().map(|v| &**v).collect::<Vec<_>>(), ["v2"]);
        assert_eq!(route.publisher, None);

        routes.remove(&a, "v2");
        routes.prune();
        assert!(routes.get(&a).is_none());
        assert!(routes.get(&b).is_some());
    }
}
