-- Which endpoints a model serves: 'chat', 'embedding', 'speech',
-- 'transcription' or 'image' (`llmgw model add|update --type`). Models
-- stored before are chat models: one that serves /v1/embeddings needs
-- `llmgw model update NAME --type embedding`.
ALTER TABLE models ADD COLUMN model_type TEXT NOT NULL DEFAULT 'chat'
    CHECK (model_type IN ('chat', 'embedding', 'speech', 'transcription', 'image'));
