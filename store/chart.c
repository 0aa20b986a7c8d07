/* chart.c - SVG charts of a statistics report: bytes per day and throughput
 * (`stats --chart` and the web pages of `serve`), and horizontal bars (the
 * web pages' top repos and files, pulled vs served, hits vs misses). Every
 * text drawn is escaped; the documents reference nothing outside themselves. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "stats.h"
#include "../util/util.h"

#define SVG_W 900
#define SVG_H 700
#define PX0 100.0
#define PX1 870.0

/* Appends s as XML text: markup characters escaped, control and non-ASCII bytes as '?'. */
static int svg_text(struct util_buf *b, const char *s)
{
	for (; *s; s++) {
		const char *e = NULL;
		char one[2] = {*s, 0};
		switch (*s) {
		case '&': e = "&amp;"; break;
		case '<': e = "&lt;"; break;
		case '>': e = "&gt;"; break;
		case '"': e = "&quot;"; break;
		case '\'': e = "&apos;"; break;
		default:
			if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
				one[0] = '?';
			e = one;
		}
		if (util_buf_adds(b, e))
			return -1;
	}
	return 0;
}

/* 1, 2 or 5 times a power of ten, at least v. */
static double nice_ceil(double v)
{
	double e, f;
	if (!(v > 0))
		return 1;
	e = pow(10, floor(log10(v)));
	f = v / e;
	return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * e;
}

/* One panel: frame, grid with y labels, x labels every step days; the
 * caller draws the data in [top, bottom]. */
static int svg_axes(struct util_buf *b, double top, double bottom, double ymax, int bytes_axis,
		    const char *ytitle, const struct store_agg *days, size_t nd, int64_t first, int64_t span)
{
	int e = 0;
	int64_t step = span / 8 + 1;
	e |= util_buf_printf(b, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"#fafafa\""
			     " stroke=\"#333\"/>\n", PX0, top, PX1 - PX0, bottom - top);
	for (int i = 0; i <= 4; i++) {
		double v = ymax * i / 4, y = bottom - (bottom - top) * i / 4;
		char lab[32];
		if (bytes_axis)
			util_human_size((uint64_t)v, lab, sizeof(lab));
		else
			snprintf(lab, sizeof(lab), "%g", v);
		e |= util_buf_printf(b, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
				     "<text x=\"%.0f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%s</text>\n",
				     PX0, y, PX1, y, PX0 - 6, y + 4, lab);
	}
	e |= util_buf_printf(b, "<text transform=\"translate(18 %.0f) rotate(-90)\" font-size=\"12\""
			     " text-anchor=\"middle\">", (top + bottom) / 2);
	e |= svg_text(b, ytitle);
	e |= util_buf_adds(b, "</text>\n");
	/* date labels every step days of the calendar (evenly spaced, whether
	 * or not a day had transfers) */
	(void)days;
	for (int64_t d = 0; nd && d < span; d += step) {
		double x = PX0 + (PX1 - PX0) * ((double)d + 0.5) / (double)span;
		time_t tt = (time_t)((first + d) * 86400);
		struct tm tm;
		char lab[16];
		gmtime_r(&tt, &tm);
		strftime(lab, sizeof(lab), "%Y-%m-%d", &tm);
		e |= util_buf_printf(b, "<text x=\"%.1f\" y=\"%.0f\" font-size=\"11\" text-anchor=\"middle\">%s</text>\n",
				     x, bottom + 16, lab);
	}
	return e ? -1 : 0;
}

/* A day's throughput in MiB/s (the tables' unit): its bytes over the
 * seconds its transfers took, so large files weigh by their bytes and a
 * thousand fast small files cannot hide a slow link. */
static double day_rate(const struct store_agg *d)
{
	return d->seconds > 0 ? (double)d->bytes / d->seconds / 1048576.0 : 0;
}

int store_chart_days(struct util_buf *b, const struct store_agg *days, size_t nd, const char *subtitle)
{
	const double t1 = 90, b1 = 330, t2 = 410, b2 = 640;
	int64_t first = nd ? days[0].day / 86400 : 0, span = nd ? days[nd - 1].day / 86400 - first + 1 : 1;
	double maxb = 0, maxr = 0, unit, slot = (PX1 - PX0) / (double)span;
	int e = 0, npts = 0;

	for (size_t i = 0; i < nd; i++) {
		if ((double)days[i].bytes > maxb)
			maxb = (double)days[i].bytes;
		if (day_rate(&days[i]) > maxr)
			maxr = day_rate(&days[i]);
	}
	/* byte ticks at round numbers of KiB, MiB, GiB ... */
	for (unit = 1; maxb >= unit * 1024; unit *= 1024)
		;
	maxb = nice_ceil(maxb / unit) * unit;
	maxr = nice_ceil(maxr);
	e |= util_buf_printf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
			     "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\""
			     " font-family=\"sans-serif\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n"
			     "<text x=\"%d\" y=\"30\" font-size=\"18\" text-anchor=\"middle\" font-weight=\"bold\">"
			     "hubmirror: bytes per day and throughput</text>\n"
			     "<text x=\"%d\" y=\"52\" font-size=\"12\" text-anchor=\"middle\" fill=\"#555\">",
			     SVG_W, SVG_H, SVG_W, SVG_H, SVG_W / 2, SVG_W / 2);
	e |= svg_text(b, subtitle);
	e |= util_buf_adds(b, "</text>\n<text x=\"100\" y=\"80\" font-size=\"13\" font-weight=\"bold\">"
			   "Bytes per day (pulls and served files)</text>\n");
	e |= svg_axes(b, t1, b1, maxb, 1, "bytes per day", days, nd, first, span);
	for (size_t i = 0; i < nd; i++) {
		double x = PX0 + slot * (double)(days[i].day / 86400 - first), h = (b1 - t1) * (double)days[i].bytes / maxb;
		double w = slot * 0.8 < 1 ? 1 : slot * 0.8;
		e |= util_buf_printf(b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#3b7dd8\">"
				     "<title>", x + (slot - w) / 2, b1 - h, w, h);
		e |= svg_text(b, days[i].key);
		e |= util_buf_printf(b, ": %" PRIu64 " bytes</title></rect>\n", days[i].bytes);
	}
	e |= util_buf_adds(b, "<text x=\"100\" y=\"400\" font-size=\"13\" font-weight=\"bold\">"
			   "Throughput over time (each day&apos;s bytes over its wall time, MiB/s)</text>\n");
	e |= svg_axes(b, t2, b2, maxr, 0, "MiB/s", days, nd, first, span);
	e |= util_buf_adds(b, "<polyline fill=\"none\" stroke=\"#d8553b\" stroke-width=\"2\" points=\"");
	for (size_t i = 0; i < nd; i++) {
		double x = PX0 + slot * ((double)(days[i].day / 86400 - first) + 0.5);
		if (!days[i].nrates)
			continue;
		e |= util_buf_printf(b, "%s%.2f,%.2f", npts++ ? " " : "", x, b2 - (b2 - t2) * day_rate(&days[i]) / maxr);
	}
	e |= util_buf_adds(b, "\"/>\n");
	for (size_t i = 0; i < nd && span <= 120; i++) {
		double x = PX0 + slot * ((double)(days[i].day / 86400 - first) + 0.5);
		if (days[i].nrates)
			e |= util_buf_printf(b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"#d8553b\"/>\n", x,
					     b2 - (b2 - t2) * day_rate(&days[i]) / maxr);
	}
	e |= util_buf_printf(b, "<text x=\"%.0f\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">day (UTC)</text>\n",
			     (PX0 + PX1) / 2, SVG_H - 22);
	if (!nd)
		e |= util_buf_adds(b, "<text x=\"485\" y=\"215\" font-size=\"14\" text-anchor=\"middle\""
				   " fill=\"#888\">no transfers in this range</text>\n");
	e |= util_buf_adds(b, "</svg>\n");
	return e ? -1 : 0;
}


#define BAR_ROW 30.0
#define BAR_LABEL_X 300.0

int store_chart_bars(struct util_buf *b, const char *title, const char *name1, const char *name2, int bytes,
		     const struct store_chart_bar *v, size_t n)
{
	double maxv = 0, top = 70, h = top + (double)(n ? n : 1) * BAR_ROW + 30;
	int e = 0;
	for (size_t i = 0; i < n; i++) {
		if ((double)v[i].value > maxv)
			maxv = (double)v[i].value;
		if (name2 && (double)v[i].value2 > maxv)
			maxv = (double)v[i].value2;
	}
	if (!(maxv > 0))
		maxv = 1;
	e |= util_buf_printf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
			     "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%.0f\" viewBox=\"0 0 %d %.0f\""
			     " font-family=\"sans-serif\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n"
			     "<text x=\"20\" y=\"28\" font-size=\"16\" font-weight=\"bold\">", SVG_W, h, SVG_W, h);
	e |= svg_text(b, title);
	e |= util_buf_adds(b, "</text>\n");
	/* legend */
	e |= util_buf_adds(b, "<rect x=\"20\" y=\"42\" width=\"12\" height=\"12\" fill=\"#3b7dd8\"/>"
			   "<text x=\"38\" y=\"53\" font-size=\"12\">");
	e |= svg_text(b, name1);
	e |= util_buf_adds(b, "</text>\n");
	if (name2) {
		e |= util_buf_adds(b, "<rect x=\"220\" y=\"42\" width=\"12\" height=\"12\" fill=\"#d8553b\"/>"
				   "<text x=\"238\" y=\"53\" font-size=\"12\">");
		e |= svg_text(b, name2);
		e |= util_buf_adds(b, "</text>\n");
	}
	for (size_t i = 0; i < n; i++) {
		double y = top + (double)i * BAR_ROW, span = SVG_W - BAR_LABEL_X - 110;
		char lab[64], val[40];
		size_t ll = strlen(v[i].label);
		/* long labels keep their end (a file name, the model's name) */
		snprintf(lab, sizeof(lab), "%s%s", ll > 44 ? "..." : "", ll > 44 ? v[i].label + ll - 41 : v[i].label);
		e |= util_buf_printf(b, "<text x=\"%.0f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"end\">",
				     BAR_LABEL_X - 8, y + 17);
		e |= svg_text(b, lab);
		e |= util_buf_adds(b, "<title>");
		e |= svg_text(b, v[i].label);
		e |= util_buf_adds(b, "</title></text>\n");
		for (int s = 0; s < (name2 ? 2 : 1); s++) {
			uint64_t x = s ? v[i].value2 : v[i].value;
			double w = span * (double)x / maxv, bh = name2 ? 11 : 20, by = y + 4 + (name2 ? s * 12 : 0);
			if (bytes)
				util_human_size(x, val, sizeof(val));
			else
				snprintf(val, sizeof(val), "%" PRIu64, x);
			e |= util_buf_printf(b, "<rect x=\"%.0f\" y=\"%.1f\" width=\"%.2f\" height=\"%.0f\" fill=\"%s\"/>"
					     "<text x=\"%.2f\" y=\"%.1f\" font-size=\"%d\">%s</text>\n",
					     BAR_LABEL_X, by, w < 1 && x ? 1 : w, bh, s ? "#d8553b" : "#3b7dd8",
					     BAR_LABEL_X + w + 6, by + bh - 2, name2 ? 10 : 12, val);
		}
	}
	if (!n)
		e |= util_buf_printf(b, "<text x=\"%d\" y=\"%.0f\" font-size=\"14\" text-anchor=\"middle\" fill=\"#888\">"
				     "no transfers in this range</text>\n", SVG_W / 2, top + 20);
	e |= util_buf_adds(b, "</svg>\n");
	return e ? -1 : 0;
}
