"""The task server: the seed's /tareas and the course's /api/tasks on a shared tasks.json."""
