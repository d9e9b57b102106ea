//! The portal's side of relayed upstream traffic ([`crate::upstream::relay`]): what reaches the
//! caller of the request it belongs to, and under which checks.
//!
//! - `sampling/createMessage` and `elicitation/create` go to the caller only when the caller's
//!   client declared the capability (and is a legacy-era session, the only kind that can be
//!   sent requests); otherwise the upstream gets a JSON-RPC error saying so. They ride the
//!   caller's request stream (rmcp's `OriginatingRequestId`).
//! - DLP: the request on its way to the client is scanned like a tool result, the client's
//!   answer on its way upstream like tool arguments (the rule's tool name is the method name);
//!   block rules refuse, redact rules redact.
//! - Each relayed request writes an audit event: method, server, subject, session, outcome —
//!   never the content.
//! - `notifications/message` goes to the caller when at or above the level the session set,
//!   scanned like a tool result.
#![allow(deprecated)] // sampling, logging and legacy elicitation are deprecated by SEP-2577.

use std::sync::Arc;
use std::time::Instant;

use rmcp::ErrorData;
use rmcp::model::{
    ClientResult, CreateMessageRequest, CreateMessageRequestParams, CreateMessageResult,
    ElicitRequest, ElicitRequestParams, ElicitResult, ErrorCode, GetExtensions,
    LoggingMessageNotification, LoggingMessageNotificationParam, ServerNotification, ServerRequest,
};
use rmcp::service::OriginatingRequestId;

use super::{Portal, guardrails, sessions};
use crate::audit::{Event, Outcome};
use crate::dlp::Scope;
use crate::upstream::relay::{Relay, Route};

const SAMPLING: &str = "sampling/createMessage";
const ELICITATION: &str = "elicitation/create";
const LOGGING: &str = "notifications/message";

/// The error an upstream gets when the caller cannot take the request.
pub fn not_declared(method: &str, why: &str) -> ErrorData {
    ErrorData::new(
        ErrorCode::METHOD_NOT_FOUND,
        format!("{method} cannot be relayed to the portal's client: {why}"),
        None,
    )
}

/// An audit event for one relayed request, written when dropped.
struct RelayAudit<'a> {
    portal: &'a Portal,
    started: Instant,
    event: Event,
}

impl<'a> RelayAudit<'a> {
    fn new(portal: &'a Portal, route: &Route, method: &str) -> Self {
        RelayAudit {
            portal,
            started: Instant::now(),
            event: Event {
                portal: portal.config().name.clone(),
                subject: route.identity.subject.clone(),
                session: route.session_tag.clone(),
                server: Some(route.server.clone()),
                method: method.into(),
                origin: Some("upstream".into()),
                decision: Outcome::Error,
                reason: Some("cancelled before completion".into()),
                ..Event::default()
            },
        }
    }

    fn outcome(&mut self, decision: Outcome, reason: Option<String>) {
        self.event.decision = decision;
        self.event.reason = reason;
    }

    fn findings(&mut self, report: &crate::dlp::Report) {
        for (k, v) in report.detector_counts() {
            *self.event.detectors.entry(k).or_default() += v;
        }
    }
}

impl Drop for RelayAudit<'_> {
    fn drop(&mut self) {
        let mut event = std::mem::take(&mut self.event);
        event.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.portal.audit(event);
    }
}

impl Portal {
    fn engine_for(&self, identity: &crate::model::Identity) -> Arc<crate::dlp::Engine> {
        self.guardrails()
            .engine(|p| crate::policy::covers(p, identity))
    }

    /// Scans `value` for the route's caller; `Err` when a block rule matched.
    fn relay_scan<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        route: &Route,
        audit: &mut RelayAudit<'_>,
        value: T,
        scope: Scope,
        method: &str,
        what: &str,
    ) -> Result<T, ErrorData> {
        let engine = self.engine_for(&route.identity);
        let (value, report) = guardrails::scan(&engine, value, scope, &route.server, method)?;
        self.observe_findings(&report);
        audit.findings(&report);
        if report.is_blocked() {
            let rule = report.blocked_by.clone().unwrap_or_default();
            audit.outcome(Outcome::Block, Some(format!("dlp rule {rule} ({what})")));
            return Err(guardrails::blocked_error(&report, what));
        }
        Ok(value)
    }

    /// Sends a request to the route's caller, on the stream of the caller's request.
    async fn ask_caller(
        &self,
        route: &Route,
        mut request: ServerRequest,
    ) -> Result<ClientResult, ErrorData> {
        request
            .extensions_mut()
            .insert(OriginatingRequestId(route.downstream.request_id.clone()));
        let Some(peer) = route.downstream.sink.peer().cloned() else {
            // The caller's answer stream carries notifications only; `relay_refusal` keeps
            // requests from getting this far.
            return Err(ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                "requests cannot be relayed to the portal's client: its answer stream carries notifications only",
                None,
            ));
        };
        // A task of its own: inside the upstream connection's handler rmcp would replace the
        // marker with the id of the *upstream's* request (a task-local that `spawn` drops).
        let task = tokio::spawn(async move { peer.send_request(request).await });
        let abort = task.abort_handle();
        tokio::select! {
            r = task => match r {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(rmcp::ServiceError::McpError(e))) => Err(e),
                Ok(Err(e)) => {
                    tracing::debug!(upstream = %route.server, error = %e, "relayed request not answered");
                    Err(ErrorData::internal_error("the portal's client did not answer", None))
                }
                Err(_) => Err(ErrorData::internal_error("the portal's client did not answer", None)),
            },
            _ = route.done().cancelled() => {
                abort.abort();
                Err(ErrorData::internal_error("the request this belongs to has ended", None))
            }
        }
    }
}

#[async_trait::async_trait]
impl Relay for Portal {
    async fn sampling(
        &self,
        route: Arc<Route>,
        mut params: CreateMessageRequestParams,
    ) -> Result<CreateMessageResult, ErrorData> {
        let mut audit = RelayAudit::new(self, &route, SAMPLING);
        let d = &route.downstream;
        let refused = if !d.accepts_requests {
            Some("it speaks a protocol without server-to-client requests")
        } else if d.capabilities.sampling.is_none() {
            Some("it did not declare the sampling capability")
        } else if (params.tools.is_some() || params.tool_choice.is_some())
            && d.capabilities
                .sampling
                .as_ref()
                .and_then(|s| s.tools.as_ref())
                .is_none()
        {
            Some("it did not declare sampling with tools")
        } else {
            None
        };
        if let Some(why) = refused {
            audit.outcome(Outcome::Deny, Some(format!("client: {why}")));
            return Err(not_declared(SAMPLING, why));
        }
        params.meta = None;
        // `includeContext` would ask the client for context from every server behind the
        // portal, for this upstream's prompt: never.
        params.include_context = None;
        let params = self.relay_scan(
            &route,
            &mut audit,
            params,
            Scope::Results,
            SAMPLING,
            "sampling request",
        )?;
        let answer = self
            .ask_caller(
                &route,
                ServerRequest::CreateMessageRequest(CreateMessageRequest::new(params)),
            )
            .await;
        let result = expected(&mut audit, answer, |r| match r {
            ClientResult::CreateMessageResult(r) => Some(*r),
            _ => None,
        })?;
        let result = self.relay_scan(
            &route,
            &mut audit,
            result,
            Scope::Arguments,
            SAMPLING,
            "sampling result",
        )?;
        audit.outcome(Outcome::Allow, None);
        Ok(result)
    }

    async fn elicitation(
        &self,
        route: Arc<Route>,
        mut params: ElicitRequestParams,
    ) -> Result<ElicitResult, ErrorData> {
        let mut audit = RelayAudit::new(self, &route, ELICITATION);
        let d = &route.downstream;
        // `elicitation: {}` means form mode (the 2025-06-18 shape).
        let form = d
            .capabilities
            .elicitation
            .as_ref()
            .is_some_and(|e| e.form.is_some() || e.url.is_none());
        let refused = match &mut params {
            _ if !d.accepts_requests => {
                Some("it speaks a protocol without server-to-client requests")
            }
            ElicitRequestParams::FormElicitationParams { meta, .. } => {
                *meta = None;
                (!form).then_some("it did not declare form elicitation")
            }
            // A URL sends the user to a page of the upstream's choosing: the portal declares
            // form mode only.
            _ => Some("the portal relays form elicitation only"),
        };
        if let Some(why) = refused {
            audit.outcome(Outcome::Deny, Some(format!("client: {why}")));
            return Err(not_declared(ELICITATION, why));
        }
        let params = self.relay_scan(
            &route,
            &mut audit,
            params,
            Scope::Results,
            ELICITATION,
            "elicitation request",
        )?;
        let answer = self
            .ask_caller(
                &route,
                ServerRequest::ElicitRequest(ElicitRequest::new(params)),
            )
            .await;
        let result = expected(&mut audit, answer, |r| match r {
            ClientResult::ElicitResult(r) => Some(r),
            _ => None,
        })?;
        let mut result = self.relay_scan(
            &route,
            &mut audit,
            result,
            Scope::Arguments,
            ELICITATION,
            "elicitation answer",
        )?;
        result.meta = None;
        audit.outcome(
            Outcome::Allow,
            Some(format!("{:?}", result.action).to_lowercase()),
        );
        Ok(result)
    }

    async fn log(&self, route: Arc<Route>, mut params: LoggingMessageNotificationParam) {
        let d = &route.downstream;
        if let Some(min) = d.session.as_deref().and_then(|s| self.sessions.level(s))
            && sessions::rank(params.level) < sessions::rank(min)
        {
            return;
        }
        params.meta = None;
        let engine = self.engine_for(&route.identity);
        let Ok((params, report)) =
            guardrails::scan(&engine, params, Scope::Results, &route.server, LOGGING)
        else {
            return;
        };
        self.observe_findings(&report);
        if report.is_blocked() {
            tracing::info!(upstream = %route.server, "log message for a caller blocked by DLP; not relayed");
            return;
        }
        let _ = d
            .sink
            .notify(ServerNotification::LoggingMessageNotification(
                LoggingMessageNotification::new(params),
            ))
            .await;
    }

    async fn resource_updated(&self, server: &str, uri: String) {
        sessions::deliver(self, server, uri).await;
    }

    async fn connected(&self, server: &str) {
        self.sessions.resubscribe(self, server).await;
    }
}

/// The caller's answer when `pick` finds the expected result in it; an error or another result
/// is audited and returned as an error.
fn expected<T>(
    audit: &mut RelayAudit<'_>,
    answer: Result<ClientResult, ErrorData>,
    pick: impl FnOnce(ClientResult) -> Option<T>,
) -> Result<T, ErrorData> {
    match answer.map(pick) {
        Ok(Some(result)) => Ok(result),
        Ok(None) => {
            audit.outcome(Outcome::Error, Some("unexpected answer".into()));
            Err(ErrorData::internal_error(
                "the portal's client answered with something else",
                None,
            ))
        }
        Err(e) => {
            audit.outcome(Outcome::Error, Some(short_reason(&e)));
            Err(e)
        }
    }
}

/// An audit reason for a failed relay: the code only (messages can carry content).
fn short_reason(e: &ErrorData) -> String {
    format!("error {}", e.code.0)
}
