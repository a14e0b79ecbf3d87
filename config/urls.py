from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.core.throttling import throttle_login_posts
from apps.core.views import ObtainAuthTokenView, health, plotly_js

from .api_router import api_v1

handler400 = "apps.core.views.bad_request"
handler404 = "apps.core.views.page_not_found"
handler500 = "apps.core.views.server_error"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # The browsable API's log-in, throttled (the include below keeps its names and its log-out).
    path("api/v1/auth/login/", throttle_login_posts(
        auth_views.LoginView.as_view(template_name="rest_framework/login.html")), name="api-login"),
    path("api/v1/auth/", include("rest_framework.urls")),
    path("api/v1/auth/token/", ObtainAuthTokenView.as_view(), name="api-token"),
    path("healthz", health, name="healthz"),
    path("", include("apps.inference.urls")),  # the original service's paths: /predict, /health, ...
    path("login/", throttle_login_posts(auth_views.LoginView.as_view(redirect_authenticated_user=True)),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("ui/vendor/plotly-<str:version>.min.js", plotly_js, name="plotly-js"),
    # Each app's pages, under its namespace; the dashboard holds home and the cross-app pages.
    path("", include("apps.dashboard.urls")),
    path("ui/", include("apps.inference.pages.urls")),
    path("ui/dataset/", include("apps.characters.pages.urls")),  # freeze, imports (the dataset page is dashboard's)
    path("ui/crawls/", include("apps.crawling.pages.urls")),
    path("ui/training/", include("apps.training.pages.urls")),
    path("ui/evaluations/", include("apps.evaluation.pages.urls")),
    path("ui/cycles/", include("apps.improvement.pages.urls")),
    path("ui/review/", include("apps.review.pages.urls")),
]

if settings.DEBUG or not settings.S3_BUCKET:
    from django.views.static import serve

    def media(request, path):
        # MEDIA_ROOT read per request, not once at import, so a settings override (each test's folder) is followed.
        return serve(request, path, document_root=settings.MEDIA_ROOT)

    urlpatterns += [path("media/<path:path>", media)]
