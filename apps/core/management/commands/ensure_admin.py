"""Make sure an admin account exists and say how to log in. Idempotent.

The password comes from KYARA_ADMIN_PASSWORD, or is generated once, stored under KYARA_DATA_DIR
(mode 600) and shown; there is never a fixed default.
"""
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the admin account if missing and print how to log in."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("KYARA_ADMIN_USER", "admin"))
        parser.add_argument("--url", default="http://127.0.0.1:8000/admin/")

    def handle(self, *args, username: str, url: str, **options):
        User = get_user_model()
        password_file = settings.DATA_DIR / "admin_password.txt"
        env_password = os.environ.get("KYARA_ADMIN_PASSWORD")
        user = User.objects.filter(username=username).first()
        if user is None:
            password = env_password or secrets.token_urlsafe(12)
            User.objects.create_superuser(username=username, email="", password=password)
            if not env_password:
                password_file.write_text(password + "\n")
                password_file.chmod(0o600)
            self.stdout.write(self.style.SUCCESS(f"Created admin account {username!r}."))
        elif env_password and not user.check_password(env_password):
            user.set_password(env_password)
            user.save(update_fields=["password"])
            self.stdout.write(f"Updated the password of {username!r} from KYARA_ADMIN_PASSWORD.")
        if env_password:
            how = "the password in KYARA_ADMIN_PASSWORD"
        elif password_file.exists():
            how = f"password {password_file.read_text().strip()} (kept in {password_file})"
        else:
            how = "the password you set earlier (set KYARA_ADMIN_PASSWORD to reset it)"
        self.stdout.write(f"Log in at {url} as {username!r} with {how}.")
