/* A STAND-IN for Coral's libedgetpu.so.1, for tests only: no Edge TPU exists here.
 *
 * It exports what LiteRT's load_delegate() calls (the external-delegate plugin API:
 * tflite_plugin_create_delegate / tflite_plugin_destroy_delegate) and libedgetpu's
 * edgetpu_version(), appends one line per load to RECORD_PATH, and delegates no node, so
 * LiteRT runs every op itself. The struct mirrors TfLiteDelegate in
 * tensorflow/lite/core/c/common.h. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct TfLiteDelegate {
  void* data_;
  int (*Prepare)(void* context, struct TfLiteDelegate* delegate);
  void* CopyFromBufferHandle;
  void* CopyToBufferHandle;
  void* FreeBufferHandle;
  int64_t flags;
  void* opaque_delegate_builder;
} TfLiteDelegate;

static int prepare(void* context, TfLiteDelegate* delegate) {
  (void)context;
  (void)delegate;
  return 0; /* kTfLiteOk, having claimed no node */
}

TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t count,
                                              void (*report_error)(const char*)) {
  (void)keys;
  (void)values;
  (void)report_error;
  FILE* record = fopen(RECORD_PATH, "a");
  if (record != NULL) {
    fprintf(record, "loaded with %zu option(s)\n", count);
    fclose(record);
  }
  TfLiteDelegate* delegate = calloc(1, sizeof *delegate);
  if (delegate != NULL) delegate->Prepare = prepare;
  return delegate;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) { free(delegate); }

const char* edgetpu_version(void) { return "stand-in for tests, delegates nothing"; }
