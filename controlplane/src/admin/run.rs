//! The admin service's replay and playground (#17): `ReplayLog` loads the
//! log and plans its replay (`crate::replay`), `Playground` checks its
//! request (`crate::playground`); both check that the key exists, then
//! send through a data plane connected to this control plane
//! (`crate::run`) and stream its answer back.

use llmgw_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::AdminService;
use crate::run::{self, Run, RunStream};
use crate::settings::GlobalSettings;
use crate::store::{Store, StoreError};

impl AdminService {
    pub(super) async fn replay_log_rpc(
        &self,
        request: Request<pb::ReplayLogRequest>,
    ) -> Result<Response<RunStream>, Status> {
        let r = request.into_inner();
        if r.id.trim().is_empty() {
            return Err(Status::invalid_argument("a request log id is required"));
        }
        let log = crate::logs::query::get(&self.store, &r.id).await?;
        let why =
            if log.request_body.is_empty() && !log.request_body_truncated && !log.bodies_expired {
                self.why_not_logged(&log).await?
            } else {
                String::new()
            };
        let plan = crate::replay::plan(&log, &r.model, &r.key, || why)?;
        self.send(plan).await
    }

    pub(super) async fn playground_rpc(
        &self,
        request: Request<pb::PlaygroundRequest>,
    ) -> Result<Response<RunStream>, Status> {
        let plan = crate::playground::plan(request.into_inner())?;
        self.send(plan).await
    }

    async fn send(&self, plan: Run) -> Result<Response<RunStream>, Status> {
        // An unknown key is the admin's mistake, said here; a revoked or
        // expired one is refused by the data plane as usual (401).
        let name = plan.key.clone();
        self.read(move |store, c| {
            Box::pin(async move {
                store.key(c, &name).await.map(drop).map_err(|e| match e {
                    StoreError::NotFound(_) => StoreError::NotFound(format!(
                        "no client key named '{name}' (see `llmgw key list`)"
                    )),
                    e => e,
                })
            })
        })
        .await?;
        tracing::info!(
            origin = plan.origin,
            key = %plan.key,
            path = %plan.path,
            replay_of = %plan.replay_of,
            "sending a request through a data plane for an admin"
        );
        run::start(&self.live, plan).await.map(Response::new)
    }

    /// Why a log's body was not logged, as far as today's settings tell.
    async fn why_not_logged(&self, log: &pb::RequestLog) -> Result<String, Status> {
        let key = log.key.clone();
        let (settings, key_logs) = self
            .read(move |store, c| {
                Box::pin(async move {
                    let settings = GlobalSettings::from_stored(&Store::settings(c).await?);
                    let key_logs = match store.key(c, &key).await {
                        Ok(k) => Some(k.spec.log_bodies),
                        Err(StoreError::NotFound(_)) => None,
                        Err(e) => return Err(e),
                    };
                    Ok((settings, key_logs))
                })
            })
            .await?;
        Ok(if !settings.log_bodies {
            "body logging is off for the gateway (--log-bodies false)".to_string()
        } else if key_logs == Some(false) {
            format!(
                "body logging is off for key '{}' (llmgw key update {} --log-bodies true)",
                log.key, log.key
            )
        } else {
            format!(
                "body logging was off when it was logged, or data plane {} records \
                 no bodies (--request-log metadata)",
                log.node_id
            )
        })
    }
}
