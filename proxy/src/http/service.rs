//! The portal's front service: the hot request skips the router.
//!
//! Every request but one goes to the axum [`Router`] built by [`super::app`]: routing, then on
//! `/mcp` the authentication, validation and session layers, then rmcp. The hot request — a
//! `POST /mcp` announced as `Mcp-Method: tools/call` — takes the same steps, called directly:
//! [`super::auth::authenticate_request`], then [`super::validate::check_post`] (which hands a
//! qualifying call to the fast path), and, when it is not answered there, the `/mcp` stack below
//! those two layers (session, rmcp). Same checks, same order, same answers; what it skips is the
//! router's dispatch and the two middleware layers' boxed futures and service clones, about 8%
//! of the proxy's own instructions per call (callgrind).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use http::Method;
use tower::{Service, ServiceExt as _};

use super::validate::{self, Checked, Validate};
use crate::portal::Portal;

/// See the module documentation.
#[derive(Clone)]
pub struct PortalService {
    /// Every request but the hot one.
    router: Router,
    hot: Arc<Hot>,
}

/// The hot request's steps.
struct Hot {
    portal: Arc<Portal>,
    validate: Validate,
    /// `/mcp` below the authentication and validation layers.
    mcp: Router,
}

impl PortalService {
    /// `router` serves everything; `mcp` is its `/mcp` stack without the authentication and
    /// validation layers, which are `portal` and `validate` here.
    pub(super) fn new(
        router: Router,
        mcp: Router,
        portal: Arc<Portal>,
        validate: Validate,
    ) -> Self {
        PortalService {
            router,
            hot: Arc::new(Hot {
                portal,
                validate,
                mcp,
            }),
        }
    }
}

/// Whether `req` is the hot request: `POST /mcp` announced as a `tools/call`, or on a legacy
/// session (whose calls are not announced; the body tells).
fn is_hot(req: &Request) -> bool {
    req.method() == Method::POST
        && req.uri().path() == "/mcp"
        && (req
            .headers()
            .get("mcp-method")
            .is_some_and(|m| m == "tools/call")
            || req.headers().contains_key(super::session::SESSION_HEADER))
}

impl Hot {
    async fn serve(&self, mut req: Request) -> Response {
        if let Err(refusal) = super::auth::authenticate_request(&self.portal, &mut req).await {
            return refusal;
        }
        match validate::check_post(&self.validate, req).await {
            Checked::Answered(response) => response,
            Checked::Forward(req) => {
                let Ok(response) = self.mcp.clone().oneshot(req).await;
                response
            }
        }
    }
}

type HotFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Service<Request> for PortalService {
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::Either<HotFuture, <Router as Service<Request>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if is_hot(&req) {
            let hot = self.hot.clone();
            futures::future::Either::Left(Box::pin(async move { Ok(hot.serve(req).await) }))
        } else {
            futures::future::Either::Right(self.router.call(req))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, F: Future, C: Fn(A) -> F>(_: &C) -> usize {
        std::mem::size_of::<F>()
    }

    /// The hot request's future is boxed, that is copied whole, once per call: its size is a
    /// cost on every call (state carried across an await, such as decoded capabilities or a
    /// `Route` by value, once added thousands of instructions per call). A rare, large branch
    /// belongs in a box of its own (as rmcp's request future and token validation are).
    #[test]
    fn the_hot_request_future_stays_small() {
        let check = |(v, r): (&'static Validate, Request)| validate::check_post(v, r);
        let auth = |(p, r): (&'static Portal, &'static mut Request)| {
            crate::http::auth::authenticate_request(p, r)
        };
        let (check, auth) = (future_size(&check), future_size(&auth));
        assert!(check <= 8 * 1024, "check_post's future is {check} bytes");
        assert!(auth <= 256, "authenticate_request's future is {auth} bytes");
    }
}
