from django.db import connection
from django.http import JsonResponse


def health(request):
    """Liveness and database readiness of this web process."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = "ok"
    except Exception as exc:  # noqa: BLE001
        database = f"error: {exc}"
    ready = database == "ok"
    return JsonResponse({"live": True, "ready": ready, "database": database}, status=200 if ready else 503)
