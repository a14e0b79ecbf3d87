from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token

from apps.core.views import health

api_v1 = [
    path("", include("apps.characters.api.urls")),
    path("", include("apps.crawling.api.urls")),
    path("", include("apps.training.api.urls")),
    path("", include("apps.inference.api.urls")),
    path("", include("apps.evaluation.api.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/auth/", include("rest_framework.urls")),
    path("api/v1/auth/token/", obtain_auth_token, name="api-token"),
    path("healthz", health, name="healthz"),
    path("", include("apps.inference.urls")),  # the original service's paths: /predict, /health, ...
    path("", include("apps.dashboard.urls")),
]

if settings.DEBUG or not settings.S3_BUCKET:
    from django.views.static import serve

    urlpatterns += [path("media/<path:path>", serve, {"document_root": settings.MEDIA_ROOT})]
