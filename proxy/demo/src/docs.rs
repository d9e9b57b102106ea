//! `docs`: a small in-memory document store.
//!
//! Four deterministic seed documents (a runbook, a release note, an architecture decision and
//! a guide); `create_document` adds more for the lifetime of the process.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use rmcp::{
    ErrorData as McpError, Json, RoleServer, ServerHandler,
    handler::server::{
        router::{prompt::PromptRouter, tool::ToolRouter},
        wrapper::Parameters,
    },
    model::{
        Implementation, ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
        PromptMessage, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
        Resource, ResourceContents, ResourceTemplate, Role, ServerCapabilities, ServerConfig,
    },
    prompt, prompt_handler, prompt_router,
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// URI scheme of the per-document resources (`docs://<id>`).
const SCHEME: &str = "docs://";

/// Longest snippet `search_documents` returns per hit, in characters.
const SNIPPET_CHARS: usize = 160;

/// One document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Document {
    /// Stable id, e.g. `runbook-session-key-rotation`.
    pub id: String,
    /// Human-readable title.
    pub title: String,
    /// Full text, Markdown.
    pub content: String,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchHit {
    /// Document id; pass it to `get_document`.
    pub id: String,
    /// Document title.
    pub title: String,
    /// The start of the document's text.
    pub snippet: String,
    /// How many query words matched (higher is better).
    pub score: u32,
}

/// The result of `search_documents`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SearchResults {
    /// Hits, best first (ties ordered by id).
    pub results: Vec<SearchHit>,
}

/// Arguments of `search_documents`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchArgs {
    /// Words to look for in titles and text (case-insensitive). An empty query lists every
    /// document.
    pub query: String,
}

/// Arguments that name one document.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct DocumentIdArgs {
    /// Document id, e.g. `runbook-session-key-rotation`.
    pub id: String,
}

/// Arguments of `create_document`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateDocumentArgs {
    /// Title of the new document.
    pub title: String,
    /// Full text of the new document (Markdown).
    pub content: String,
}

/// The deterministic seed documents.
pub fn seed_documents() -> Vec<Document> {
    let doc = |id: &str, title: &str, content: &str| Document {
        id: id.to_owned(),
        title: title.to_owned(),
        content: content.to_owned(),
    };
    vec![
        doc(
            "runbook-session-key-rotation",
            "Runbook: rotate the session encryption key",
            "# Rotate the session encryption key\n\n\
             Sessions are sealed with the key in the `portal-session-key` Secret. To rotate \
             without logging anyone out:\n\n\
             1. Add the new key as `next` in the Secret; replicas start accepting both.\n\
             2. Wait for every replica to report the new key generation (`/readyz`).\n\
             3. Promote `next` to `current`; new sessions use it.\n\
             4. After the longest session lifetime (24h), remove the old key.\n\n\
             Roll back by swapping `current` and `next` again.\n",
        ),
        doc(
            "release-notes-0-3-0",
            "Release notes: Portcullis 0.3.0",
            "# Portcullis 0.3.0\n\n\
             - Code Mode is GA: `portal_codemode_search` and `portal_codemode_execute`.\n\
             - DLP detectors for cloud credentials and IBANs.\n\
             - Stateless 2026-07-28 protocol support next to legacy sessions.\n\
             - Breaking: `McpPolicy.spec.tools` patterns are now anchored.\n",
        ),
        doc(
            "adr-0004-self-contained-sessions",
            "ADR 0004: self-contained session ids",
            "# ADR 0004: self-contained session ids\n\n\
             Status: accepted.\n\n\
             Portals run several replicas behind a Service without affinity. A legacy session id \
             is therefore an authenticated-encryption envelope of the session state, so any \
             replica can serve any request. Key rotation follows the runbook.\n",
        ),
        doc(
            "guide-hosting-an-mcp-server",
            "Guide: host your MCP server behind Portcullis",
            "# Host your MCP server behind Portcullis\n\n\
             Copy the template, write the tools, and declare an `McpServer` with a `deployment`. \
             The operator adds the proxy as a sidecar, so your server inherits authentication, \
             audit logging, default-deny writes and secrets from Secrets.\n",
        ),
    ]
}

/// A URL- and tool-argument-friendly id from a title: lower-case ASCII words joined by `-`.
fn slug(title: &str) -> String {
    let mut slug = String::new();
    for word in title
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.push_str(&word.to_ascii_lowercase());
        if slug.len() >= 48 {
            break;
        }
    }
    if slug.is_empty() {
        slug.push_str("document");
    }
    slug
}

fn snippet(content: &str) -> String {
    let flat: String = content
        .lines()
        .map(|line| line.trim_start_matches('#').trim())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match flat.char_indices().nth(SNIPPET_CHARS) {
        Some((end, _)) => format!("{}…", &flat[..end]),
        None => flat,
    }
}

fn unknown_id(id: &str) -> String {
    format!("no document with id {id:?}; call search_documents to find document ids")
}

/// The `docs` MCP server. Cheap to clone: all clones share one store.
#[derive(Clone)]
pub struct DocsServer {
    store: Arc<Mutex<BTreeMap<String, Document>>>,
    tool_router: Arc<ToolRouter<Self>>,
    prompt_router: Arc<PromptRouter<Self>>,
}

impl Default for DocsServer {
    fn default() -> Self {
        Self::new()
    }
}

#[tool_router]
impl DocsServer {
    pub fn new() -> Self {
        let store = seed_documents()
            .into_iter()
            .map(|doc| (doc.id.clone(), doc))
            .collect();
        Self {
            store: Arc::new(Mutex::new(store)),
            tool_router: Arc::new(Self::tool_router()),
            prompt_router: Arc::new(Self::prompt_router()),
        }
    }

    fn store(&self) -> MutexGuard<'_, BTreeMap<String, Document>> {
        // Every mutation is a single insert, so a poisoned lock still holds consistent data.
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn document(&self, id: &str) -> Option<Document> {
        self.store().get(id.trim()).cloned()
    }

    /// Search the document store (runbooks, release notes, design decisions, guides) by words in
    /// the title or text, case-insensitively. Returns ids, titles and a snippet, best match
    /// first; fetch the full text with get_document. An empty query lists every document.
    #[tool(annotations(
        title = "Search documents",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    pub async fn search_documents(
        &self,
        Parameters(args): Parameters<SearchArgs>,
    ) -> Json<SearchResults> {
        let words: Vec<String> = args
            .query
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        let mut results: Vec<SearchHit> = self
            .store()
            .values()
            .filter_map(|doc| {
                let haystack = format!("{} {} {}", doc.id, doc.title, doc.content).to_lowercase();
                let score = words
                    .iter()
                    .filter(|w| haystack.contains(w.as_str()))
                    .count() as u32;
                (words.is_empty() || score > 0).then(|| SearchHit {
                    id: doc.id.clone(),
                    title: doc.title.clone(),
                    snippet: snippet(&doc.content),
                    score,
                })
            })
            .collect();
        // The store iterates in id order and the sort is stable, so ties stay ordered by id.
        results.sort_by_key(|hit| std::cmp::Reverse(hit.score));
        Json(SearchResults { results })
    }

    /// Get the full text (Markdown) and title of one document by id.
    #[tool(annotations(
        title = "Get a document",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    pub async fn get_document(
        &self,
        Parameters(args): Parameters<DocumentIdArgs>,
    ) -> Result<Json<Document>, String> {
        self.document(&args.id)
            .map(Json)
            .ok_or_else(|| unknown_id(&args.id))
    }

    /// Create a new document from a title and Markdown text. Returns the stored document with
    /// the id it was given (derived from the title; a suffix keeps ids unique).
    #[tool(annotations(
        title = "Create a document",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    pub async fn create_document(
        &self,
        Parameters(args): Parameters<CreateDocumentArgs>,
    ) -> Result<Json<Document>, String> {
        if args.title.trim().is_empty() {
            return Err("title must not be empty".to_owned());
        }
        let mut store = self.store();
        let base = slug(&args.title);
        let id = std::iter::once(base.clone())
            .chain((2..).map(|n| format!("{base}-{n}")))
            .find(|id| !store.contains_key(id))
            .unwrap_or(base);
        let doc = Document {
            id: id.clone(),
            title: args.title,
            content: args.content,
        };
        store.insert(id, doc.clone());
        Ok(Json(doc))
    }
}

#[prompt_router]
impl DocsServer {
    /// Summarize one document in a few bullet points.
    #[prompt(name = "summarize_document", title = "Summarize a document")]
    pub async fn summarize_document(
        &self,
        Parameters(args): Parameters<DocumentIdArgs>,
    ) -> Result<Vec<PromptMessage>, McpError> {
        let doc = self
            .document(&args.id)
            .ok_or_else(|| McpError::invalid_params(unknown_id(&args.id), None))?;
        Ok(vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Summarize the document \"{title}\" in at most five bullet points, keeping \
                 commands and names exact.\n\n{content}",
                title = doc.title,
                content = doc.content
            ),
        )])
    }
}

fn resource_for(doc: &Document) -> Resource {
    Resource::new(format!("{SCHEME}{}", doc.id), doc.id.clone())
        .with_title(doc.title.clone())
        .with_mime_type("text/markdown")
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for DocsServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .build(),
        )
        .with_server_info(
            Implementation::new("portcullis-demo-docs", env!("CARGO_PKG_VERSION"))
                .with_title("Portcullis demo document store"),
        )
        .with_instructions(
            "A small document store. search_documents and get_document read; create_document \
             writes. Each document is also a resource docs://<id>.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let resources = self.store().values().map(resource_for).collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(format!("{SCHEME}{{id}}"), "document")
                .with_title("A document by id")
                .with_description("One document as Markdown, e.g. docs://release-notes-0-3-0")
                .with_mime_type("text/markdown"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let doc = request
            .uri
            .strip_prefix(SCHEME)
            .and_then(|id| self.document(id))
            .ok_or_else(|| {
                McpError::resource_not_found(format!("no document resource {}", request.uri), None)
            })?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(doc.content, request.uri).with_mime_type("text/markdown"),
        ])
        .into())
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::{GetPromptRequestParams, ReadResourceRequestParams, ResourceContents};
    use serde_json::json;

    use super::*;
    use crate::test_support::*;

    #[tokio::test]
    async fn tools_are_listed_with_read_and_write_annotations() {
        let client = connect(DocsServer::new()).await;
        let tools = client.list_all_tools().await.expect("tools/list");
        let summary: Vec<(&str, Option<bool>)> = tools
            .iter()
            .map(|tool| {
                (
                    tool.name.as_ref(),
                    tool.annotations.as_ref().and_then(|a| a.read_only_hint),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("create_document", Some(false)),
                ("get_document", Some(true)),
                ("search_documents", Some(true))
            ]
        );
        for tool in &tools {
            let annotations = tool.annotations.as_ref().expect("annotations");
            assert!(annotations.title.is_some());
            assert_eq!(annotations.destructive_hint, Some(false));
            assert_eq!(annotations.open_world_hint, Some(false));
        }
    }

    #[tokio::test]
    async fn search_ranks_the_runbook_first_for_a_rotation_query() {
        let client = connect(DocsServer::new()).await;
        let hits = structured(
            &call(
                &client,
                "search_documents",
                json!({"query": "Runbook ROTATE"}),
            )
            .await,
        );
        assert_eq!(hits["results"][0]["id"], "runbook-session-key-rotation");
        assert_eq!(hits["results"][0]["score"], 2);
    }

    #[tokio::test]
    async fn an_empty_query_lists_every_document_and_no_match_lists_none() {
        let client = connect(DocsServer::new()).await;
        let all = structured(&call(&client, "search_documents", json!({"query": "  "})).await);
        assert_eq!(all["results"].as_array().map(Vec::len), Some(4));
        let none = structured(
            &call(
                &client,
                "search_documents",
                json!({"query": "kubernetes-xyzzy"}),
            )
            .await,
        );
        assert_eq!(none["results"], json!([]));
    }

    #[tokio::test]
    async fn unknown_document_id_is_a_tool_error() {
        let client = connect(DocsServer::new()).await;
        let result = call(&client, "get_document", json!({"id": "missing"})).await;
        assert_eq!(result.is_error, Some(true));
        assert!(text(&result).contains("no document with id \"missing\""));
    }

    #[tokio::test]
    async fn created_documents_get_unique_ids_and_become_resources() {
        let client = connect(DocsServer::new()).await;
        let arguments = json!({"title": "Postmortem: 401 storm", "content": "# What happened"});
        let first = structured(&call(&client, "create_document", arguments.clone()).await);
        let second = structured(&call(&client, "create_document", arguments).await);
        assert_eq!(first["id"], "postmortem-401-storm");
        assert_eq!(second["id"], "postmortem-401-storm-2");

        let fetched = structured(
            &call(
                &client,
                "get_document",
                json!({"id": "postmortem-401-storm"}),
            )
            .await,
        );
        assert_eq!(fetched["content"], "# What happened");
        let resources = client.list_all_resources().await.expect("resources/list");
        assert!(
            resources
                .iter()
                .any(|r| r.uri == "docs://postmortem-401-storm-2")
        );
    }

    #[tokio::test]
    async fn creating_a_document_without_a_title_is_a_tool_error() {
        let client = connect(DocsServer::new()).await;
        let result = call(
            &client,
            "create_document",
            json!({"title": " ", "content": "x"}),
        )
        .await;
        assert_eq!(result.is_error, Some(true));
    }

    #[tokio::test]
    async fn documents_read_as_markdown_resources() {
        let client = connect(DocsServer::new()).await;
        let read = client
            .read_resource(ReadResourceRequestParams::new("docs://release-notes-0-3-0"))
            .await
            .expect("resources/read");
        let ResourceContents::TextResourceContents {
            text, mime_type, ..
        } = &read.contents[0]
        else {
            panic!("text contents expected");
        };
        assert_eq!(mime_type.as_deref(), Some("text/markdown"));
        assert!(text.starts_with("# Portcullis 0.3.0"));
    }

    #[tokio::test]
    async fn summarize_prompt_embeds_the_document_text() {
        let client = connect(DocsServer::new()).await;
        let prompt = client
            .get_prompt(
                GetPromptRequestParams::new("summarize_document")
                    .with_arguments(args(json!({"id": "adr-0004-self-contained-sessions"}))),
            )
            .await
            .expect("prompts/get");
        let message = serde_json::to_string(&prompt.messages).expect("serialize");
        assert!(message.contains("authenticated-encryption envelope"));
    }

    #[test]
    fn slugs_are_valid_ids_even_for_odd_titles() {
        assert_eq!(slug("Release notes: 0.4!"), "release-notes-0-4");
        assert_eq!(slug("¿¿??"), "document");
    }
}
