"""Every user-facing WhatsApp text (Indonesian) in one place."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal


def rupiah(amount: float | Decimal) -> str:
    """``450000`` → ``Rp450.000`` (Indonesian thousands separator)."""
    return "Rp" + f"{int(amount):,}".replace(",", ".")


def joined(title: str) -> str:
    return (
        f"Terima kasih sudah join! Anda terdaftar di trip {title}.\n"
        "Ketik INFO untuk melihat produk terbaru, STOP untuk berhenti menerima notifikasi."
    )


def trip_not_found(slug: str) -> str:
    return (
        f'Maaf, trip dengan kode "{slug}" tidak ditemukan. '
        "Cek kembali kode trip dari jastiper Anda, contoh: JOIN jpn25"
    )


def join_needs_slug() -> str:
    return "Untuk bergabung, ketik JOIN diikuti kode trip, contoh: JOIN jpn25"


def not_joined() -> str:
    return "Anda belum bergabung ke trip mana pun. Ketik JOIN diikuti kode trip, contoh: JOIN jpn25"


def latest_products(title: str, products: Sequence[tuple[str, int | float | Decimal]]) -> str:
    if not products:
        return f"Belum ada produk di trip {title}. Kami kabari begitu ada produk baru!"
    lines = [f"Berikut produk terbaru trip {title}:"]
    lines += [f"{index}. {name} - {rupiah(price)}" for index, (name, price) in enumerate(products, start=1)]
    return "\n".join(lines)


def stopped(title: str, slug: str) -> str:
    return (
        f"Anda berhenti menerima notifikasi. (trip {title})\n"
        f"Ketik JOIN {slug} kapan saja untuk bergabung lagi."
    )


def help_text() -> str:
    return (
        "Halo! Perintah yang bisa dipakai:\n"
        "• JOIN <kode trip> — bergabung ke trip\n"
        "• INFO — lihat 3 produk terbaru\n"
        "• STOP — berhenti menerima notifikasi"
    )


def product_update(title: str, name: str, price: float | Decimal, description: str | None) -> str:
    text = f"Ada produk baru di trip {title}: {name} - {rupiah(price)}"
    if description:
        text += f"\n{description}"
    return text + "\n\nBalas INFO untuk produk terbaru, STOP untuk berhenti."


def proof_caption(participant_name: str, order_ref: str, caption: str | None) -> str:
    text = f"Bukti dari {participant_name} untuk pesanan {order_ref}"
    return f"{text}: {caption}" if caption else text


def broadcast_estimate(count: int, total: int) -> str:
    return f"Kirim pesan ke {count} peserta = {rupiah(total)}"
