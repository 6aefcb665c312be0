//! The admin service's model tools (#17): `TestModel`, `ImportModels` and
//! `RetargetModels`, on top of `model_test` (the outbound test) and
//! `crate::model_tools` (the planned, one-transaction writes). A dry run,
//! or a write with nothing to do, rolls its transaction back, which also
//! undoes the version bump: the configuration version moves only when
//! models change.

use std::collections::{BTreeMap, BTreeSet};

use llmgw_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::AdminService;
use crate::convert::model_type;
use crate::model_test;
use crate::model_tools::{self, TargetRef};
use crate::store::{Store, StoreError};

impl AdminService {
    pub(super) async fn test_model_rpc(
        &self,
        request: Request<pb::TestModelRequest>,
    ) -> Result<Response<pb::TestModelResponse>, Status> {
        let r = request.into_inner();
        let name = r.name.clone();
        let (model, providers) = self
            .read(move |store, c| {
                Box::pin(async move {
                    let model = store.model(c, &name).await?;
                    let providers: BTreeMap<_, _> = store
                        .providers(c)
                        .await?
                        .into_iter()
                        .map(|p| (p.spec.name.clone(), p))
                        .collect();
                    Ok((model, providers))
                })
            })
            .await?;
        let timeout = model_test::timeout_of(r.timeout_ms);
        let results = model_test::test(&model, &providers, timeout).await;
        Ok(Response::new(pb::TestModelResponse {
            model: model.spec.name.clone(),
            r#type: model.spec.model_type.as_str().to_string(),
            targets: results
                .into_iter()
                .map(|t| pb::TargetTest {
                    ok: t.ok(),
                    provider: t.provider,
                    upstream_model: t.upstream_model,
                    protocol: t.protocol,
                    request: t.request,
                    status: u32::from(t.status),
                    latency_ms: t.latency_ms,
                    error: t.error,
                    excerpt: t.excerpt,
                })
                .collect(),
        }))
    }

    pub(super) async fn import_models_rpc(
        &self,
        request: Request<pb::ImportModelsRequest>,
    ) -> Result<Response<pb::ImportModelsResponse>, Status> {
        let r = request.into_inner();
        let kind = model_type(&r.r#type)?;
        let provider = r.provider.clone();
        let row = self
            .read(move |store, c| Box::pin(async move { store.provider(c, &provider).await }))
            .await?;
        // The outbound call, before the transaction: no lock is held while
        // the upstream answers.
        let listed = crate::upstream_models::list(&row).await?;
        let mut tx = self.store.begin_write().await?;
        let existing: BTreeSet<String> = self
            .store
            .models(&mut tx)
            .await?
            .into_iter()
            .map(|m| m.spec.name)
            .collect();
        let plan = model_tools::import_plan(&listed.models, &existing, &r.r#match, &r.prefix);
        let creates = plan.iter().any(|m| m.action == "create");
        let version = if r.dry_run || !creates {
            tx.rollback().await.map_err(StoreError::from)?;
            self.store.config_version().await?
        } else {
            model_tools::import(&self.store, &mut tx, &r.provider, kind, &plan).await?;
            let version = Store::version_in(&mut tx).await?;
            tx.commit().await.map_err(StoreError::from)?;
            self.hub.changed().await;
            version
        };
        Ok(Response::new(pb::ImportModelsResponse {
            models: plan
                .into_iter()
                .map(|m| pb::ImportedModel {
                    name: m.name,
                    upstream_model: m.upstream_model,
                    action: m.action.to_string(),
                    reason: m.reason,
                })
                .collect(),
            config_version: version,
            truncated: listed.truncated,
        }))
    }

    pub(super) async fn retarget_models_rpc(
        &self,
        request: Request<pb::RetargetModelsRequest>,
    ) -> Result<Response<pb::RetargetModelsResponse>, Status> {
        let r = request.into_inner();
        let from = TargetRef {
            provider: r.from_provider.trim().to_string(),
            upstream_model: r.from_upstream_model.trim().to_string(),
        };
        let to = TargetRef {
            provider: r.to_provider.trim().to_string(),
            upstream_model: r.to_upstream_model.trim().to_string(),
        };
        let mut tx = self.store.begin_write().await?;
        let changes = model_tools::retarget(&self.store, &mut tx, &from, &to).await?;
        let version = if r.dry_run || changes.is_empty() {
            tx.rollback().await.map_err(StoreError::from)?;
            self.store.config_version().await?
        } else {
            let version = Store::version_in(&mut tx).await?;
            tx.commit().await.map_err(StoreError::from)?;
            self.hub.changed().await;
            version
        };
        Ok(Response::new(pb::RetargetModelsResponse {
            changes: changes
                .into_iter()
                .map(|c| pb::RetargetChange {
                    model: c.model,
                    priority: c.priority,
                    from_provider: c.from.provider,
                    from_upstream_model: c.from.upstream_model,
                    to_provider: c.to.provider,
                    to_upstream_model: c.to.upstream_model,
                })
                .collect(),
            config_version: version,
        }))
    }
}
