//! `tickets`: a small in-memory ticket tracker.
//!
//! Seed data is deterministic (five `PORT-1xx` tickets, exactly one `in_progress`); mutations
//! (`update_ticket_status`, `attach_document`) are visible for the lifetime of the process and
//! shared by every session and every stateless request the process serves.

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

/// URI scheme of the per-ticket resources (`tickets://PORT-101`).
const SCHEME: &str = "tickets://";

/// Where a ticket is in its life: "open" (not started), "in_progress" or "done".
///
/// Inlined as a plain string enum so tool schemas stay small and free of `$ref`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(inline)]
pub enum TicketStatus {
    Open,
    InProgress,
    Done,
}

/// A document attached to a ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AttachedDocument {
    /// Title of the attached document.
    pub title: String,
    /// Full text of the attached document.
    pub content: String,
}

/// One ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Ticket {
    /// Ticket key, e.g. `PORT-101`.
    pub key: String,
    /// One-line summary.
    pub title: String,
    /// Longer description of the work.
    pub description: String,
    /// Current status.
    pub status: TicketStatus,
    /// Who the ticket is assigned to, if anyone.
    pub assignee: Option<String>,
    /// Documents attached to the ticket, oldest first.
    pub documents: Vec<AttachedDocument>,
}

/// The result of `list_tickets`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TicketList {
    /// Matching tickets, ordered by key.
    pub tickets: Vec<Ticket>,
}

/// Arguments of `list_tickets`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListTicketsArgs {
    /// Only return tickets with this status; omit to return every ticket.
    #[serde(default)]
    #[schemars(with = "TicketStatus", transform = drop_default)]
    pub status: Option<TicketStatus>,
}

/// Removes the `"default": null` that `#[serde(default)]` adds to an optional property whose
/// schema is a plain string enum (`null` is not one of its values).
fn drop_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

/// Arguments that name one ticket.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct TicketKeyArgs {
    /// Ticket key, e.g. `PORT-101`.
    pub key: String,
}

/// Arguments of `update_ticket_status`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct UpdateStatusArgs {
    /// Ticket key, e.g. `PORT-101`.
    pub key: String,
    /// The new status.
    pub status: TicketStatus,
}

/// Arguments of `attach_document`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AttachDocumentArgs {
    /// Ticket key, e.g. `PORT-101`.
    pub key: String,
    /// Title of the document to attach.
    pub title: String,
    /// Full text of the document to attach.
    pub content: String,
}

/// The deterministic seed tickets. Exactly one is `in_progress`.
pub fn seed_tickets() -> Vec<Ticket> {
    let ticket =
        |key: &str, title: &str, description: &str, status, assignee: Option<&str>| Ticket {
            key: key.to_owned(),
            title: title.to_owned(),
            description: description.to_owned(),
            status,
            assignee: assignee.map(str::to_owned),
            documents: Vec::new(),
        };
    vec![
        ticket(
            "PORT-101",
            "Portal returns 401 for service accounts with group claims",
            "Tokens minted for service accounts carry groups as a space-separated string, not an \
             array. The portal rejects them instead of splitting the claim.",
            TicketStatus::Open,
            None,
        ),
        ticket(
            "PORT-102",
            "Rotate the session encryption key without dropping sessions",
            "Replicas must accept session ids sealed with the previous key while new sessions use \
             the new one. Follow the key rotation runbook and attach it here when done.",
            TicketStatus::InProgress,
            Some("ana.ops"),
        ),
        ticket(
            "PORT-103",
            "Record Code Mode output truncation in the audit event",
            "When an execute result hits the output cap, the audit event should say so and record \
             the original size.",
            TicketStatus::Open,
            Some("li.wei"),
        ),
        ticket(
            "PORT-104",
            "Document the stdio sidecar pattern",
            "Explain how a deployed stdio server gets the proxy as a sidecar and inherits auth, \
             audit and DLP.",
            TicketStatus::Done,
            Some("sam.k"),
        ),
        ticket(
            "PORT-105",
            "DLP false positive on UUIDs in tool arguments",
            "The credit card detector matches some UUID fragments. Add a Luhn check before \
             redacting.",
            TicketStatus::Open,
            None,
        ),
    ]
}

/// The `tickets` MCP server. Cheap to clone: all clones share one store.
#[derive(Clone)]
pub struct TicketsServer {
    store: Arc<Mutex<BTreeMap<String, Ticket>>>,
    tool_router: Arc<ToolRouter<Self>>,
    prompt_router: Arc<PromptRouter<Self>>,
}

impl Default for TicketsServer {
    fn default() -> Self {
        Self::new()
    }
}

/// Ticket keys are case-insensitive on input; stored keys are upper case.
fn normalize_key(key: &str) -> String {
    key.trim().to_ascii_uppercase()
}

fn unknown_key(key: &str) -> String {
    format!("no ticket with key {key:?}; call list_tickets to see the existing keys")
}

#[tool_router]
impl TicketsServer {
    pub fn new() -> Self {
        let store = seed_tickets()
            .into_iter()
            .map(|ticket| (ticket.key.clone(), ticket))
            .collect();
        Self {
            store: Arc::new(Mutex::new(store)),
            tool_router: Arc::new(Self::tool_router()),
            prompt_router: Arc::new(Self::prompt_router()),
        }
    }

    fn store(&self) -> MutexGuard<'_, BTreeMap<String, Ticket>> {
        // A panic while holding the lock cannot leave a ticket half-written (every mutation is a
        // single field assignment or push), so a poisoned lock is still safe to use.
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn ticket(&self, key: &str) -> Option<Ticket> {
        self.store().get(&normalize_key(key)).cloned()
    }

    /// List tickets in the tracker, optionally only those with one status
    /// ("open", "in_progress" or "done"). Returns every matching ticket with its key, title,
    /// status, assignee and attached documents, ordered by key.
    #[tool(annotations(
        title = "List tickets",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    pub async fn list_tickets(
        &self,
        Parameters(args): Parameters<ListTicketsArgs>,
    ) -> Json<TicketList> {
        let tickets = self
            .store()
            .values()
            .filter(|ticket| args.status.is_none_or(|status| ticket.status == status))
            .cloned()
            .collect();
        Json(TicketList { tickets })
    }

    /// Get one ticket by its key (for example "PORT-101"), including its description, status,
    /// assignee and attached documents.
    #[tool(annotations(
        title = "Get a ticket",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    pub async fn get_ticket(
        &self,
        Parameters(args): Parameters<TicketKeyArgs>,
    ) -> Result<Json<Ticket>, String> {
        self.ticket(&args.key)
            .map(Json)
            .ok_or_else(|| unknown_key(&args.key))
    }

    /// Set the status of a ticket ("open", "in_progress" or "done") and return the updated
    /// ticket. Setting the status a ticket already has changes nothing.
    #[tool(annotations(
        title = "Update ticket status",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    pub async fn update_ticket_status(
        &self,
        Parameters(args): Parameters<UpdateStatusArgs>,
    ) -> Result<Json<Ticket>, String> {
        let mut store = self.store();
        let ticket = store
            .get_mut(&normalize_key(&args.key))
            .ok_or_else(|| unknown_key(&args.key))?;
        ticket.status = args.status;
        Ok(Json(ticket.clone()))
    }

    /// Attach a document (a title and its full text) to a ticket and return the updated ticket.
    /// Each call appends another attachment; existing attachments are never changed.
    #[tool(annotations(
        title = "Attach a document to a ticket",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    pub async fn attach_document(
        &self,
        Parameters(args): Parameters<AttachDocumentArgs>,
    ) -> Result<Json<Ticket>, String> {
        let mut store = self.store();
        let ticket = store
            .get_mut(&normalize_key(&args.key))
            .ok_or_else(|| unknown_key(&args.key))?;
        ticket.documents.push(AttachedDocument {
            title: args.title,
            content: args.content,
        });
        Ok(Json(ticket.clone()))
    }
}

#[prompt_router]
impl TicketsServer {
    /// Triage one ticket: read it and propose a status, an owner and next steps.
    #[prompt(name = "triage_ticket", title = "Triage a ticket")]
    pub async fn triage_ticket(
        &self,
        Parameters(args): Parameters<TicketKeyArgs>,
    ) -> Result<Vec<PromptMessage>, McpError> {
        let ticket = self
            .ticket(&args.key)
            .ok_or_else(|| McpError::invalid_params(unknown_key(&args.key), None))?;
        let json = serde_json::to_string_pretty(&ticket)
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        Ok(vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Triage ticket {key}. Decide whether its status is right, who should own it and \
                 what the next concrete step is. Keep the answer under 120 words.\n\n```json\n{json}\n```",
                key = ticket.key
            ),
        )])
    }
}

fn resource_for(ticket: &Ticket) -> Resource {
    Resource::new(format!("{SCHEME}{}", ticket.key), ticket.key.clone())
        .with_title(ticket.title.clone())
        .with_description(format!("Ticket {} as JSON", ticket.key))
        .with_mime_type("application/json")
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for TicketsServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .build(),
        )
        .with_server_info(
            Implementation::new("portcullis-demo-tickets", env!("CARGO_PKG_VERSION"))
                .with_title("Portcullis demo ticket tracker"),
        )
        .with_instructions(
            "A small ticket tracker. list_tickets (optionally by status) and get_ticket read; \
             update_ticket_status and attach_document write. Each ticket is also a resource \
             tickets://<KEY>.",
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
            ResourceTemplate::new(format!("{SCHEME}{{key}}"), "ticket")
                .with_title("A ticket by key")
                .with_description("One ticket as JSON, e.g. tickets://PORT-101")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let ticket = request
            .uri
            .strip_prefix(SCHEME)
            .and_then(|key| self.ticket(key))
            .ok_or_else(|| {
                McpError::resource_not_found(format!("no ticket resource {}", request.uri), None)
            })?;
        let json = serde_json::to_string_pretty(&ticket)
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(json, request.uri).with_mime_type("application/json"),
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

    #[test]
    fn seed_data_has_exactly_one_ticket_in_progress() {
        let in_progress: Vec<_> = seed_tickets()
            .into_iter()
            .filter(|ticket| ticket.status == TicketStatus::InProgress)
            .collect();
        assert_eq!(in_progress.len(), 1);
    }

    #[tokio::test]
    async fn tools_are_listed_with_read_and_write_annotations() {
        let client = connect(TicketsServer::new()).await;
        let tools = client.list_all_tools().await.expect("tools/list");
        let summary: Vec<(&str, Option<bool>, Option<bool>)> = tools
            .iter()
            .map(|tool| {
                let annotations = tool.annotations.as_ref().expect("annotations");
                (
                    tool.name.as_ref(),
                    annotations.read_only_hint,
                    annotations.destructive_hint,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("attach_document", Some(false), Some(false)),
                ("get_ticket", Some(true), Some(false)),
                ("list_tickets", Some(true), Some(false)),
                ("update_ticket_status", Some(false), Some(false)),
            ]
        );
        for tool in &tools {
            let annotations = tool.annotations.as_ref().expect("annotations");
            assert!(annotations.title.is_some(), "{} has a title", tool.name);
            assert_eq!(annotations.open_world_hint, Some(false));
            assert!(annotations.idempotent_hint.is_some());
            assert!(tool.description.as_deref().is_some_and(|d| d.len() > 40));
            assert_eq!(tool.input_schema.get("type"), Some(&json!("object")));
        }
        for name in ["list_tickets", "get_ticket"] {
            let tool = tools.iter().find(|tool| tool.name == name).expect(name);
            assert!(
                tool.output_schema.is_some(),
                "{name} declares an outputSchema"
            );
        }
    }

    #[test]
    fn the_status_filter_is_an_optional_plain_string_enum() {
        let tool = TicketsServer::list_tickets_tool_attr();
        let status = &tool.input_schema["properties"]["status"];
        assert_eq!(status["type"], "string");
        assert_eq!(status["enum"], json!(["open", "in_progress", "done"]));
        assert!(status.get("default").is_none() && status.get("$ref").is_none());
        assert!(tool.input_schema.get("required").is_none());
    }

    #[tokio::test]
    async fn in_progress_filter_returns_exactly_one_ticket() {
        let client = connect(TicketsServer::new()).await;
        let listed =
            structured(&call(&client, "list_tickets", json!({"status": "in_progress"})).await);
        let tickets = listed["tickets"].as_array().expect("tickets");
        assert_eq!(tickets.len(), 1);
        assert_eq!(tickets[0]["key"], "PORT-102");
        assert_eq!(tickets[0]["status"], "in_progress");
    }

    #[tokio::test]
    async fn listing_without_a_status_returns_every_ticket_in_key_order() {
        let client = connect(TicketsServer::new()).await;
        let listed = structured(&call(&client, "list_tickets", json!({})).await);
        let keys: Vec<&str> = listed["tickets"]
            .as_array()
            .expect("tickets")
            .iter()
            .filter_map(|ticket| ticket["key"].as_str())
            .collect();
        assert_eq!(
            keys,
            ["PORT-101", "PORT-102", "PORT-103", "PORT-104", "PORT-105"]
        );
    }

    #[tokio::test]
    async fn attach_document_appends_and_later_reads_see_it() {
        let server = TicketsServer::new();
        let client = connect(server.clone()).await;
        let attach = json!({"key": "port-101", "title": "Notes", "content": "split the claim"});
        let first = structured(&call(&client, "attach_document", attach.clone()).await);
        assert_eq!(
            first["documents"],
            json!([{"title": "Notes", "content": "split the claim"}])
        );
        let second = structured(&call(&client, "attach_document", attach).await);
        assert_eq!(second["documents"].as_array().map(Vec::len), Some(2));

        // Another clone of the server (as the HTTP transport makes per session) shares the store.
        let other = connect(server).await;
        let fetched = structured(&call(&other, "get_ticket", json!({"key": "PORT-101"})).await);
        assert_eq!(fetched["documents"].as_array().map(Vec::len), Some(2));
    }

    #[tokio::test]
    async fn update_ticket_status_changes_what_the_filter_returns() {
        let client = connect(TicketsServer::new()).await;
        let updated = structured(
            &call(
                &client,
                "update_ticket_status",
                json!({"key": "PORT-102", "status": "done"}),
            )
            .await,
        );
        assert_eq!(updated["status"], "done");
        let listed =
            structured(&call(&client, "list_tickets", json!({"status": "in_progress"})).await);
        assert_eq!(listed["tickets"], json!([]));
    }

    #[tokio::test]
    async fn unknown_key_is_a_tool_error_with_a_clear_message() {
        let client = connect(TicketsServer::new()).await;
        for (tool, arguments) in [
            ("get_ticket", json!({"key": "PORT-999"})),
            (
                "update_ticket_status",
                json!({"key": "PORT-999", "status": "done"}),
            ),
            (
                "attach_document",
                json!({"key": "PORT-999", "title": "t", "content": "c"}),
            ),
        ] {
            let result = call(&client, tool, arguments).await;
            assert_eq!(result.is_error, Some(true), "{tool}");
            assert!(
                text(&result).contains("no ticket with key \"PORT-999\""),
                "{tool}: {}",
                text(&result)
            );
        }
    }

    #[tokio::test]
    async fn every_ticket_is_a_json_resource_and_a_template_names_them() {
        let client = connect(TicketsServer::new()).await;
        let resources = client.list_all_resources().await.expect("resources/list");
        assert_eq!(resources.len(), 5);
        assert_eq!(resources[0].uri, "tickets://PORT-101");
        assert_eq!(resources[0].mime_type.as_deref(), Some("application/json"));
        let templates = client
            .list_all_resource_templates()
            .await
            .expect("templates");
        assert_eq!(templates[0].uri_template, "tickets://{key}");

        let read = client
            .read_resource(ReadResourceRequestParams::new("tickets://PORT-102"))
            .await
            .expect("resources/read");
        let ResourceContents::TextResourceContents {
            text, mime_type, ..
        } = &read.contents[0]
        else {
            panic!("text contents expected");
        };
        assert_eq!(mime_type.as_deref(), Some("application/json"));
        let ticket: Ticket = serde_json::from_str(text).expect("ticket JSON");
        assert_eq!(ticket.status, TicketStatus::InProgress);

        let missing = client
            .read_resource(ReadResourceRequestParams::new("tickets://NOPE"))
            .await;
        assert!(missing.is_err());
    }

    #[tokio::test]
    async fn triage_prompt_embeds_the_ticket() {
        let client = connect(TicketsServer::new()).await;
        let prompts = client.list_all_prompts().await.expect("prompts/list");
        assert_eq!(prompts.len(), 1);
        assert_eq!(prompts[0].name, "triage_ticket");
        let arguments = prompts[0].arguments.as_ref().expect("arguments");
        assert_eq!(arguments[0].name, "key");
        assert_eq!(arguments[0].required, Some(true));

        let prompt = client
            .get_prompt(
                GetPromptRequestParams::new("triage_ticket")
                    .with_arguments(args(json!({"key": "PORT-105"}))),
            )
            .await
            .expect("prompts/get");
        let message = serde_json::to_string(&prompt.messages).expect("serialize");
        assert!(message.contains("DLP false positive on UUIDs"));
    }
}
