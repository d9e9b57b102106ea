//! An upstream's lists: what it offers, fetched list by list, following cursors (bounded).

use std::time::Duration;

use rmcp::RoleClient;
use rmcp::model::{Prompt, Resource, ResourceTemplate, Tool};
use rmcp::service::Peer;

/// Upper bound on how many list pages we follow from one upstream.
const MAX_LIST_PAGES: usize = 100;

/// What an upstream offers, as of its last successful list.
#[derive(Debug, Default, Clone)]
pub struct Lists {
    /// Tools.
    pub tools: Vec<Tool>,
    /// Prompts.
    pub prompts: Vec<Prompt>,
    /// Resources.
    pub resources: Vec<Resource>,
    /// Resource templates.
    pub templates: Vec<ResourceTemplate>,
}

/// Fetches every list the upstream supports, following its cursors (bounded).
pub(super) async fn fetch_catalog(
    peer: &Peer<RoleClient>,
    timeout: Duration,
) -> Result<Lists, String> {
    let caps = peer
        .peer_info()
        .map(|i| i.capabilities.clone())
        .unwrap_or_default();
    let t =
        |what: &'static str| move |_| format!("{what} unanswered within {}s", timeout.as_secs());
    let mut catalog = Lists::default();
    if caps.tools.is_some() {
        catalog.tools = tokio::time::timeout(
            timeout,
            list_all(|c| peer.list_tools(c), |r| (r.tools, r.next_cursor)),
        )
        .await
        .map_err(t("tools/list"))?
        .map_err(|e| format!("tools/list failed: {e}"))?;
    }
    if caps.prompts.is_some() {
        catalog.prompts = tokio::time::timeout(
            timeout,
            list_all(|c| peer.list_prompts(c), |r| (r.prompts, r.next_cursor)),
        )
        .await
        .map_err(t("prompts/list"))?
        .map_err(|e| format!("prompts/list failed: {e}"))?;
    }
    if caps.resources.is_some() {
        catalog.resources = tokio::time::timeout(
            timeout,
            list_all(|c| peer.list_resources(c), |r| (r.resources, r.next_cursor)),
        )
        .await
        .map_err(t("resources/list"))?
        .map_err(|e| format!("resources/list failed: {e}"))?;
        // Templates are optional even for servers with resources.
        catalog.templates = tokio::time::timeout(
            timeout,
            list_all(
                |c| peer.list_resource_templates(c),
                |r| (r.resource_templates, r.next_cursor),
            ),
        )
        .await
        .map_err(t("resources/templates/list"))?
        .unwrap_or_default();
    }
    Ok(catalog)
}

async fn list_all<R, T, F, Fut>(
    call: F,
    split: impl Fn(R) -> (Vec<T>, Option<String>),
) -> Result<Vec<T>, rmcp::ServiceError>
where
    F: Fn(Option<rmcp::model::PaginatedRequestParams>) -> Fut,
    Fut: Future<Output = Result<R, rmcp::ServiceError>>,
{
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_LIST_PAGES {
        let params = cursor
            .take()
            .map(|c| rmcp::model::PaginatedRequestParams::default().with_cursor(Some(c)));
        let (items, next) = split(call(params).await?);
        out.extend(items);
        match next {
            Some(c) if !c.is_empty() => cursor = Some(c),
            _ => return Ok(out),
        }
    }
    tracing::warn!("upstream list has more than {MAX_LIST_PAGES} pages; truncated");
    Ok(out)
}
