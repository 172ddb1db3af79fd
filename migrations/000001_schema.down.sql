DROP TABLE IF EXISTS workflow_workers;
DROP TABLE IF EXISTS components;
DROP TABLE IF EXISTS compiled_workflows;
DROP TABLE IF EXISTS workflows;
DROP TABLE IF EXISTS projects;
